"""Front ends: the command line, the board and the dash. They parse, call a use-case, render."""
