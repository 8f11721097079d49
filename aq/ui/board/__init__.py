"""`aq board`: the queue as a kanban in the terminal, a stage per column (or, on a narrow
terminal, per lane) and a card per job.

`board_data` (data) gathers what a board shows: the jobs and block reasons `aq ls` gives, the
lease holders' heartbeat ages as this machine saw them, why a failed job failed (from its last
attempt's tail). `render_board` (layout) lays it out with rich for a terminal of a given width and
height, every stage on screen; `board_text` prints that to a string, with or without colour.
What one card says, whatever the layout, is `cards`.
"""

from aq.ui.board.data import BoardData, Card, board_data
from aq.ui.board.layout import CARDS_SHOWN, board_text, render_board, stages_from

__all__ = ["CARDS_SHOWN", "BoardData", "Card", "board_data", "board_text", "render_board",
           "stages_from"]
