"""Timing shared by both workers' graceful stops."""

# On a graceful stop, how long a connection that was accepted but has not sent
# its first request yet may take to send it.  Closing it at once would fail a
# request the client is about to send, and clients only retry on connections
# that have served a request before.
FRESH_CONNECTION_GRACE = 1.0
