"""`aq dash`: the queue in a terminal, for the person at the gate.

A numbered job list with filters (`jobs`, what it shows: `rows`), single keys for the moves a
person makes, a log viewer that follows a running attempt (`logview`), and the halt switch.
Everything it reads or changes goes through `aq.usecases` (list_jobs, move_job, halt, resume,
find_log, read_log), one call at a time in a worker thread (`session`), so the dashboard can do
nothing the CLI could not, and refuses what the CLI refuses, with the same words. `app` puts it
together and runs it.
"""
