#!/usr/bin/env python3
"""Test suites that other projects wrote, against apps that clusterserve serves, beside a reference server.

From the repository root, with Python >= 3.10:

    python3 tests/foreign/run.py [--suites requests,httpx] [--modes shared,round-robin,reuseport]
                                 [--codecs h11,httptools] [--one-codec-per-mode]

Two suites, each run once per server, with tests/foreign/served_fixtures.py
replacing the fixture that would start a server of the suite's own:

- requests: its own ``tests/test_requests.py`` against httpbin (a Flask app),
  over HTTP and, for the ``httpbin_secure`` tests, HTTPS with a certificate
  made by trustme. Served by gunicorn's sync worker (the reference) and by
  clusterserve's WSGI worker.
- httpx: its own suite against its test app ``tests.conftest:app``, served by
  uvicorn (the reference) and by clusterserve's ASGI worker.

clusterserve runs in each dispatch mode with each ``--http`` codec (14 runs in
all, about 4 minutes on a quiet 2-core machine); with ``--one-codec-per-mode``,
each mode with one codec, the codecs taking turns from the suite's default, so
that the two suites between them still run every mode with every codec once
(8 runs, about 2 minutes plus 30 seconds of setup: what CI runs). Every server has 2 workers (uvicorn 1
process) and listens on 127.0.0.1; the suites run at the same time, each in a
process of its own, as they spend most of their time waiting.

Deselected, with the reason printed: requests' 4 connect-timeout tests and
httpx's tests marked ``network``, which send traffic off this machine.

Setup, done again only when tests/foreign/requirements.txt or pyproject.toml
change: a venv at tests/foreign/.venv with those requirements and
clusterserve itself (editable, with the standard extra); then this script
re-runs itself in that venv. The tests come from the sdists of the pinned
requests and httpx, downloaded by pip into tests/foreign/.cache/ (never
committed).

Prints one line per server (passed, failed, skipped, seconds) and ends with
one verdict line. Exit 0 when, in each suite, every clusterserve server passes
every test (by test id) that the reference server passes; else 1, after naming
the tests and pointing at each run's log. Exit 2 when setup fails.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = HERE / ".venv"
CACHE = HERE / ".cache"
REQUIREMENTS = HERE / "requirements.txt"
sys.path.insert(0, str(ROOT))
from tests.harness import OUTSIDE_SETTINGS, children_of  # noqa: E402 - after sys.path gets the checkout

DISPATCH_MODES = ("shared", "round-robin", "reuseport")
CODECS = ("h11", "httptools")
LISTENING = re.compile(r"(?:Listening at:|running on) https?://127\.0\.0\.1:(\d+)")
PYTEST_RUN_TIMEOUT = 300.0  # seconds for one whole suite against one server (a run takes about 30)
TEST_TIMEOUT = 30  # seconds for one test (pytest-timeout); the slowest take 10
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Server:
    """How to start one server of an app: everything but the TLS flags."""

    label: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Suite:
    name: str
    distribution: str  # its tests come from this distribution's sdist
    test_args: tuple[str, ...]  # paths and deselections, from the sdist's root
    deselected_because: str
    app: str  # what the servers serve, importable from the sdist's root
    reference: Server
    needs_tls: bool  # also serve the app over HTTPS, for the suite's TLS tests
    default_codec: str  # clusterserve's --http auto for this app


@dataclass
class Outcomes:
    by_test: dict[str, str]  # test id -> "passed" | "failed" | "skipped"
    messages: dict[str, str]  # test id -> first line of its failure
    seconds: float
    log: Path
    error: str = ""  # why the run has no results, if it has none

    def count(self, outcome: str) -> int:
        return sum(1 for value in self.by_test.values() if value == outcome)

    def summary(self) -> str:
        counts = f"{self.count('passed')} passed, {self.count('failed')} failed, {self.count('skipped')} skipped"
        return f"{counts}  ({self.seconds:.0f} s)" + (f"  NO RESULTS: {self.error}" if self.error else "")


def python_server(module: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module, *args)


def clusterserve(app: str, mode: str, codec: str) -> Server:
    return Server(f"clusterserve {mode} {codec}", python_server(
        "clusterserve", "-w", "2", "--dispatch", mode, "--http", codec, "-b", "127.0.0.1:0", app))


SUITES = {
    "requests": Suite(
        name="requests",
        distribution="requests",
        test_args=(
            "tests/test_requests.py",
            "--deselect", "tests/test_requests.py::TestTimeout::test_connect_timeout",
            "--deselect", "tests/test_requests.py::TestTimeout::test_total_timeout_connect",
        ),
        deselected_because="the 4 connect-timeout tests: they connect to 10.255.255.1, off this machine",
        app="httpbin:app",
        reference=Server("gunicorn sync", python_server(
            "gunicorn", "-w", "2", "-k", "sync", "-b", "127.0.0.1:0", "httpbin:app")),
        needs_tls=True,
        default_codec="h11",
    ),
    "httpx": Suite(
        name="httpx",
        distribution="httpx",
        test_args=("tests", "-m", "not network"),
        deselected_because="the tests marked network: they reach hosts off this machine",
        app="tests.conftest:app",
        reference=Server("uvicorn", python_server(
            "uvicorn", "--host", "127.0.0.1", "--port", "0", "--lifespan", "off", "tests.conftest:app")),
        needs_tls=False,
        default_codec="httptools",
    ),
}


# -- setup ---------------------------------------------------------------------


def setup() -> None:
    """Make the venv (when its requirements changed), then re-run this script inside it."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements-sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not python.exists():
        say(f"setup: creating {VENV.relative_to(ROOT)}")
        quietly([sys.executable, "-m", "venv", str(VENV)])
    if not stamp.exists() or stamp.read_text().strip() != want:
        say(f"setup: pip install -r {REQUIREMENTS.relative_to(ROOT)} -e .[standard]")
        quietly([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "-r", str(REQUIREMENTS), "-e", f"{ROOT}[standard]"])
        stamp.write_text(want + "\n")
    argv = [str(python), str(Path(__file__).resolve()), "--no-setup", *sys.argv[1:]]
    os.execv(argv[0], argv)


def quietly(argv: Sequence[str]) -> None:
    """Run a setup command; show its output only when it fails."""
    done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        say(done.stdout + done.stderr)
        raise subprocess.CalledProcessError(done.returncode, argv)


def suite_source(distribution: str) -> Path:
    """The sdist of the installed ``distribution``, unpacked into the cache (downloaded once)."""
    version = metadata.version(distribution)
    source = CACHE / f"{distribution}-{version}"
    if (source / "tests").is_dir():
        return source
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as download:
        quietly([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                 "--no-deps", "--no-binary", ":all:", "-d", download, f"{distribution}=={version}"])
        (archive,) = Path(download).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            unpacked = Path(download) / "unpacked"
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, filter="data")
            else:
                tar.extractall(unpacked)
        (top,) = unpacked.iterdir()
        if not (top / "tests").is_dir():
            raise RuntimeError(f"the sdist {archive.name} has no tests/ directory")
        top.rename(source)
    return source


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA bundle, and a certificate with its key for 127.0.0.1 signed by that CA."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_bundle, cert, key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_bundle))
    for pem in issued.cert_chain_pems:
        pem.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    return ca_bundle, cert, key


# -- servers -------------------------------------------------------------------


def clean_environment() -> dict[str, str]:
    """This process's environment less what would change a server's settings or send traffic to a proxy."""
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    return {key: value for key, value in os.environ.items()
            if key not in OUTSIDE_SETTINGS and key.lower() not in proxies}


@contextmanager
def serving(argv: Sequence[str], cwd: Path, log: Path, ca_bundle: Path | None = None) -> Iterator[int]:
    """Start a server, wait until it answers, yield its port; then stop every process it had, by pid.

    With ``ca_bundle`` it serves HTTPS, checked with that bundle.
    """
    with log.open("wb") as log_file:
        process = subprocess.Popen(list(argv), cwd=cwd, env={**clean_environment(), "PYTHONUNBUFFERED": "1"},
                                   stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    known = {process.pid}
    try:
        port = wait_listening(process, log)
        wait_answering(process, port, ca_bundle, log)
        known.update(children_of(process.pid))
        yield port
    finally:
        if process.poll() is None:
            known.update(children_of(process.pid))
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for pid in known:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout=5)


def wait_listening(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"server did not start listening (see {log}):\n{tail(log)}")


def wait_answering(process: subprocess.Popen[bytes], port: int, ca_bundle: Path | None, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if ca_bundle:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=5, context=ssl.create_default_context(cafile=str(ca_bundle)))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
        finally:
            conn.close()
    raise RuntimeError(f"server never answered GET / (see {log}):\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- one suite against one server ----------------------------------------------------


def run_suite(suite: Suite, source: Path, server: Server, certificate: tuple[Path, Path, Path],
              logs: Path) -> Outcomes:
    slug = re.sub(r"[^a-z0-9]+", "-", f"{suite.name} {server.label}".lower())
    report, pytest_log = logs / f"{slug}.xml", logs / f"{slug}.log"
    started = time.monotonic()
    ca_bundle, cert, key = certificate
    try:
        with ExitStack() as stack:
            port = stack.enter_context(serving(server.argv, source, logs / f"{slug}.server.log"))
            served = ["--served-url", f"http://127.0.0.1:{port}/"]
            if suite.needs_tls:
                tls_argv = (*server.argv, "--certfile", str(cert), "--keyfile", str(key))
                tls_port = stack.enter_context(
                    serving(tls_argv, source, logs / f"{slug}.tls-server.log", ca_bundle=ca_bundle))
                served += ["--served-tls-url", f"https://127.0.0.1:{tls_port}/", "--served-ca-bundle", str(ca_bundle)]
            with pytest_log.open("wb") as log_file:
                subprocess.run(
                    [sys.executable, "-m", "pytest", "-p", "served_fixtures", "-p", "no:cacheprovider",
                     f"--timeout={TEST_TIMEOUT}", "-q", f"--junitxml={report}",
                     *served, *suite.test_args],
                    cwd=source, env={**clean_environment(), "PYTHONPATH": str(HERE)},
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    timeout=PYTEST_RUN_TIMEOUT, check=False)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return Outcomes({}, {}, time.monotonic() - started, pytest_log, error=str(error).splitlines()[0])
    seconds = time.monotonic() - started
    if not report.exists():
        return Outcomes({}, {}, seconds, pytest_log, error=f"pytest wrote no report (see {pytest_log})")
    by_test, messages = read_junit(report)
    return Outcomes(by_test, messages, seconds, pytest_log)


def read_junit(report: Path) -> tuple[dict[str, str], dict[str, str]]:
    by_test: dict[str, str] = {}
    messages: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            by_test[test_id] = "failed"
            messages[test_id] = (failure.get("message") or "").partition("\n")[0][:200]
        elif case.find("skipped") is not None:
            by_test[test_id] = "skipped"
        else:
            by_test[test_id] = "passed"
    return by_test, messages


def regressions(reference: Outcomes, outcomes: Outcomes) -> list[str]:
    """Tests that pass under the reference server and not under this one."""
    return sorted(test for test, outcome in reference.by_test.items()
                  if outcome == "passed" and outcomes.by_test.get(test) != "passed")


# -- main ------------------------------------------------------------------------


def say(*parts: object) -> None:
    print(*parts, flush=True)


def choices(value: str, allowed: Sequence[str]) -> list[str]:
    chosen = [item for item in value.split(",") if item]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
    return chosen


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", type=lambda v: choices(v, tuple(SUITES)), default=list(SUITES),
                        help="which suites (default: all, each in a process of its own, at the same time)")
    parser.add_argument("--modes", type=lambda v: choices(v, DISPATCH_MODES), default=list(DISPATCH_MODES),
                        help="clusterserve's dispatch modes (default: all)")
    parser.add_argument("--codecs", type=lambda v: choices(v, CODECS), default=list(CODECS),
                        help="clusterserve's --http (default: both)")
    parser.add_argument("--one-codec-per-mode", action="store_true",
                        help="each mode with one codec, the codecs taking turns from the suite's default"
                             " (so both suites together run every mode with every codec once)")
    parser.add_argument("--no-setup", action="store_true", help="use this interpreter as it is")
    return parser.parse_args(argv)


def servers_under_test(suite: Suite, args: argparse.Namespace) -> list[Server]:
    if not args.one_codec_per_mode:
        return [clusterserve(suite.app, mode, codec) for mode in args.modes for codec in args.codecs]
    first = args.codecs.index(suite.default_codec) if suite.default_codec in args.codecs else 0
    return [clusterserve(suite.app, mode, args.codecs[(first + turn) % len(args.codecs)])
            for turn, mode in enumerate(args.modes)]


def stop_on_term(signum: int, frame: object) -> None:
    raise SystemExit(f"foreign suites: stopped by signal {signum}")


def run_one_suite(suite: Suite, args: argparse.Namespace) -> int:
    """Run ``suite`` against the reference server, then each clusterserve; print a line each and a verdict."""
    started = time.monotonic()
    try:
        source = suite_source(suite.distribution)
    except (subprocess.CalledProcessError, RuntimeError) as error:
        say(f"{suite.name}: setup failed: {error}")
        return 2
    logs = Path(tempfile.mkdtemp(prefix=f"foreign-{suite.name}-"))
    certificate = make_certificate(logs)
    say(f"== {suite.distribution} {metadata.version(suite.distribution)}: its tests against {suite.app}"
        f" (deselected: {suite.deselected_because})")
    reference = run_suite(suite, source, suite.reference, certificate, logs)
    say(f"  {suite.reference.label:36} {reference.summary()}  (reference)")
    if reference.error or reference.count("passed") == 0:
        say(f"{suite.name}: FAILED, the reference run under {suite.reference.label} passed nothing"
            f" (log: {reference.log})")
        return 1
    failures = []
    servers = servers_under_test(suite, args)
    for server in servers:
        outcomes = run_suite(suite, source, server, certificate, logs)
        lost = regressions(reference, outcomes)
        say(f"  {server.label:36} {outcomes.summary()}" + (f"  {len(lost)} below the reference" if lost else ""))
        if lost:
            failures.append(f"{server.label} fails {len(lost)} tests that {suite.reference.label} passes"
                            f" (log: {outcomes.log})")
            for test in lost[:20]:
                say(f"      {test}: {outcomes.messages.get(test) or outcomes.by_test.get(test, 'not run')}")
    minutes = (time.monotonic() - started) / 60
    for failure in failures:
        say(f"  {failure}")
    verdict = "FAILED, clusterserve below" if failures else "OK, clusterserve passed every test of"
    say(f"{suite.name}: {verdict} {suite.reference.label} ({1 + len(servers)} runs, {minutes:.1f} min)")
    return 1 if failures else 0


def run_suites_at_once(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Each suite in a child process of its own, all at once (they spend most of their time waiting)."""
    started = time.monotonic()
    children = []
    for name in args.suites:
        output = tempfile.TemporaryFile()
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv, "--no-setup",
                                  "--suites", name], stdin=subprocess.DEVNULL, stdout=output,
                                 stderr=subprocess.STDOUT)
        children.append((name, child, output))
    statuses = {}
    try:
        for name, child, _ in children:
            statuses[name] = child.wait()
    finally:
        for _, child, output in children:
            if child.poll() is None:
                child.terminate()
                child.wait()
            output.seek(0)
            sys.stdout.write(output.read().decode(errors="replace"))
            sys.stdout.flush()
    minutes = (time.monotonic() - started) / 60
    failed = [name for name, status in statuses.items() if status != 0]
    if failed:
        say(f"foreign suites: FAILED: {', '.join(failed)} ({minutes:.1f} min)")
        return max(statuses.values())
    say(f"foreign suites: OK, clusterserve passed every test that gunicorn or uvicorn passed"
        f" in {', '.join(statuses)} ({minutes:.1f} min)")
    return 0


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if not args.no_setup:
        try:
            setup()  # does not return: re-runs this script in the venv
        except subprocess.CalledProcessError as error:
            say(f"foreign suites: setup failed: {error}")
            return 2
    signal.signal(signal.SIGTERM, stop_on_term)
    if len(args.suites) > 1:
        return run_suites_at_once(args, argv)
    return run_one_suite(SUITES[args.suites[0]], args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
