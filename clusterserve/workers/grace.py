"""Timing shared by both workers' graceful stops."""

# On a graceful stop, how long a connection with nothing in flight and nothing
# buffered may take to send a request before it is closed: one accepted that
# has not sent its first request yet, or one kept alive.  Closing it at once
# would fail a request the client is sending this instant (clients only retry
# on connections that have served a request, and wrk never does).
FRESH_CONNECTION_GRACE = 1.0

# The first SIGINT (Ctrl-C) is a graceful stop bounded by this (or graceful_timeout, if
# shorter), as uvicorn's Ctrl-C lets requests finish; a second SIGINT stops at once.
INTERRUPT_GRACE = 5.0
# On a fast stop (SIGQUIT, a second SIGINT) the ASGI app's lifespan shutdown still runs,
# for at most this long.
FAST_LIFESPAN_SHUTDOWN = 3.0
