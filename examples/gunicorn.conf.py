"""A gunicorn-style Python config file, with server hooks.

clusterserve reads it as gunicorn does; give it with -c (a gunicorn.conf.py
in the working directory is not loaded by itself):

    clusterserve -c examples/gunicorn.conf.py examples.hello:app
    gunicorn -c examples/gunicorn.conf.py examples.hello:app     # the same file

Names of settings are read (docs/settings.md), hooks are callables, and
anything else (imports, helpers, names starting with _) is ignored. A
gunicorn setting that clusterserve does not act on gets a warning.
"""

import multiprocessing
import os

# -- Settings -----------------------------------------------------------
bind = os.environ.get("BIND", "127.0.0.1:8000")
# $WEB_CONCURRENCY when set, else one worker per CPU (at most 8).
workers = int(os.environ.get("WEB_CONCURRENCY", min(multiprocessing.cpu_count(), 8)))
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 10000
max_requests_jitter = 500
accesslog = "-"
loglevel = "info"
forwarded_allow_ips = "127.0.0.1,::1"


# -- Hooks ----------------------------------------------------------------
# `server` is the arbiter and `worker` a worker: both have .pid and .log (the
# error log), as in gunicorn. A hook that raises is logged, never fatal.

def on_starting(server):
    """In the arbiter, before it binds its sockets."""
    server.log.info("hook on_starting: arbiter %s", server.pid)


def when_ready(server):
    """In the arbiter, once the first workers are ready."""
    server.log.info("hook when_ready: serving")


def post_fork(server, worker):
    """In each new worker, right after the fork: reopen connections here, not before."""
    worker.log.info("hook post_fork: worker %s", worker.pid)


def post_request(worker, req, environ, resp):
    """In a WSGI worker, after each response (environ is the WSGI environ)."""
    worker.log.debug("hook post_request: %s %s -> %s",
                     environ["REQUEST_METHOD"], environ["PATH_INFO"], resp.status)


def worker_exit(server, worker):
    """In the worker, as it exits."""
    worker.log.info("hook worker_exit: worker %s", worker.pid)


def on_exit(server):
    """In the arbiter, just before it exits."""
    server.log.info("hook on_exit: goodbye")
