"""`aq dash`: the queue in a terminal, for the person at the gate, with lazygit's and k9s's habits.

A numbered job list coloured by stage and priority, its columns fitted to the width (`table`,
what a row says: `rows`, `times`, colours and stage tabs: `look`); stage tabs on `1`-`7` and Tab,
a search line (`search`), marks and the moves on them (`moves`), a detail pane with what
`aq show` prints (`detail`), a log viewer that follows a running attempt, steps through the
attempts and searches (`logview`), the workers view (`workers`), the questions (`dialogs`) and
`?`, every key read from the bindings (`help`). Everything it reads or changes goes through
`aq.usecases` (list_jobs, show_job, move_job, halt, resume, list_workers, find_log, read_log),
one call at a time in a worker thread (`session`), so the dashboard can do nothing the CLI
could not, and refuses what the CLI refuses, with the same words. `app` puts it together, and
refuses to start without a terminal.
"""
