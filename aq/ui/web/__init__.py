"""`aq web`: the queue in a browser, served by a local process from any clone.

It reads and writes the queue as the CLI does (the same use-cases, the same pushes as
compare-and-swap, the same refusals); nothing runs on a server of ours. `guard` keeps strangers
out (a token off loopback, CSRF on every change, the Host header checked); `live` fetches the
remote every few seconds and tells open pages when the queue changed; `pages` and `actions`
are the routes; `app` puts them together and `serve` runs it under uvicorn.
"""
