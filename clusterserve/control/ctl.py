"""``clusterserve ctl``: ask a running server for its status, or to reload, scale or stop.

It talks to the arbiter's control socket (the ``control_socket`` setting),
found from ``--control-socket`` (or ``--socket``), ``$CLUSTERSERVE_CONTROL_SOCKET``, or the
configuration the server would read in this directory.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # the server said no, or could not be reached
EXIT_USAGE = 2
TIMEOUT = 10.0
MIB = 1024 * 1024


def _options() -> argparse.ArgumentParser:
    """The options, taken before or after the command (``ctl status --json`` as well as
    ``ctl --json status``)."""
    options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    options.add_argument("--control-socket", "-s", "--socket", dest="socket", metavar="PATH",
                         help="the control socket (the server's --control-socket); default: "
                         "$CLUSTERSERVE_CONTROL_SOCKET, or control_socket from the configuration "
                         "in this directory (or -c)")
    options.add_argument("-c", "--config", metavar="FILE", help="read control_socket from this file")
    options.add_argument("--json", action="store_true", help="print the server's reply as JSON")
    return options


def _parser() -> argparse.ArgumentParser:
    options = _options()
    parser = argparse.ArgumentParser(
        prog="clusterserve ctl", parents=[options], description="Talk to a running clusterserve "
        "through its control socket (start the server with --control-socket PATH). Options may "
        "come before or after the command.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("status", parents=[options], help="a table of the workers and totals")
    commands.add_parser("reload", parents=[options], help="reload the app with zero downtime, as SIGHUP")
    scale = commands.add_parser("scale", parents=[options],
                                help="set the number of workers (kept across reloads; see docs/signals.md)")
    scale.add_argument("workers", type=int, metavar="N")
    commands.add_parser("stop", parents=[options], help="stop gracefully, as SIGTERM")
    return parser


def find_socket(args: argparse.Namespace) -> str | None:
    if getattr(args, "socket", None):
        return str(args.socket)
    if os.environ.get("CLUSTERSERVE_CONTROL_SOCKET"):
        return os.environ["CLUSTERSERVE_CONTROL_SOCKET"]
    from clusterserve.config import ConfigError, load_config

    try:
        config = getattr(args, "config", None)
        cfg = load_config(["-c", config] if config else [])
    except ConfigError as err:
        raise SystemExit(_fail(str(err), EXIT_USAGE)) from None
    path: str | None = cfg.control_socket
    return path


def ask(path: str, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the control socket and return the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ValueError("the server closed the connection without replying (see its error log)")
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError("the reply is not a JSON object")
    return reply


def format_status(status: dict[str, Any]) -> str:
    """The status reply as a table a person can read."""
    queued = "" if status["queued"] is None else f", {status['queued']} connections queued"
    lines = [f"clusterserve {status['version']}  arbiter pid {status['pid']}  app {status['app']}  "
             f"{status['state']}, generation {status['generation']}, up {_duration(status['uptime'])}",
             f"dispatch {status['dispatch']}, {status['workers_wanted']} workers wanted{queued}", ""]
    columns = ("WORKER", "PID", "GEN", "AGE", "STATE", "CONNS", "ACCEPTED", "REQUESTS",
               "IN FLIGHT", "HEARTBEAT", "RSS")
    rows = [(str(w["worker"]), str(w["pid"]), str(w["generation"]), _duration(w["age"]), w["state"],
             str(w["connections"]), str(w["accepted"]), str(w["requests"]), str(w["in_flight"]),
             f"{w['last_heartbeat']:.1f}s ago", _mib(w["rss"])) for w in status["workers"]]
    totals = status["totals"]
    rows.append(("total", "", "", "", f"{totals['workers']} workers", str(totals["connections"]),
                 str(totals["accepted"]), str(totals["requests"]),
                 str(totals["in_flight"]), "", _mib(totals["rss"])))
    widths = [max(len(row[i]) for row in (columns, *rows)) for i in range(len(columns))]
    for row in (columns, *rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    restarts = ", ".join(f"{reason} {count}" for reason, count in sorted(status["restarts"].items()))
    lines += ["", f"restarts: {restarts or 'none'}"]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f} MiB"


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"clusterserve ctl: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)  # exits 2 on bad usage
    path = find_socket(args)
    if not path:
        return _fail("no control socket: pass --control-socket PATH, or start the server with "
                     "--control-socket PATH (setting control_socket)", EXIT_USAGE)
    request: dict[str, Any] = {"command": args.command}
    if args.command == "scale":
        request["workers"] = args.workers
    try:
        reply = ask(path, request)
    except OSError as err:
        return _fail(f"cannot reach the server at {path}: {err.strerror or err}")
    except ValueError as err:
        return _fail(f"unexpected reply from {path}: {err}")
    as_json = getattr(args, "json", False)
    if as_json:
        print(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        return _fail(str(reply.get("error", "the server refused")))
    if not as_json:
        print(format_status(reply["status"]) if args.command == "status" else reply.get("message"))
    return EXIT_OK
