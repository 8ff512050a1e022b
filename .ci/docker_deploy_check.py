#!/usr/bin/env python3
"""The image of deploy/docker/Dockerfile, built and run by a real Docker engine.

`.ci/run` starts this beside the test suite. As root on a Debian machine it:

1. installs Debian's ``docker.io`` and ``debootstrap`` when they are missing;
2. starts a dockerd of its own (its own socket, data and exec roots in a
   temporary directory; no bridge network, no iptables rules);
3. makes the Dockerfile's base image, since no image registry is reachable:
   debootstrap of Debian bookworm (minbase, with python3, python3-venv and
   ca-certificates), ``python`` linked to ``python3``, this machine's CA
   bundle copied in (pip reaches the package index through a proxy with its
   own CA; Debian's pip reads that bundle, so no pip.conf is needed: the
   host's adds only local mirrors of packages the image does not use), then
   ``docker import`` under the name in the Dockerfile's FROM. The tarball is kept in a cache directory
   when there is one (``$CLUSTERSERVE_CI_CACHE``, else ``~/.cache`` if it
   exists) and made again after a week;
4. builds the image with ``docker build --network host`` from the checkout
   (the legacy builder: no BuildKit frontend to pull);
5. runs it with ``--network host`` on a free 127.0.0.1 port and the README's
   ``--stop-timeout``, and checks that it serves as PID 1 and not as root,
   that the checkout's .git and .venv stayed out of it, that its
   HEALTHCHECK turns healthy, that the arbiter reaps orphaned processes, that
   ``docker kill -s HUP`` under load fails no request, and that ``docker
   stop`` ends it with exit code 0 within the stop timeout;
6. stops dockerd and removes everything but the cached tarball.

Exit status: 0 passed; 77 skipped, only when dockerd cannot run here (the
reason is printed); anything else failed. The last line is the summary.
Needs only the standard library.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
README = ROOT / "README.md"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What python:3.11-slim's config says besides its files.
BASE_IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
# Bump when the base image's recipe changes: cached tarballs of the old one are not used.
BASE_RECIPE = 2
CACHE_MAX_AGE = datetime.timedelta(days=7)
IMAGE = "clusterserve-deploy-check:latest"
CONTAINER = "clusterserve-deploy-check"
SKIPPED = 77
STARTED = time.monotonic()


class Skip(Exception):
    """Docker cannot run on this machine: the check is skipped, with a one-line reason and details."""

    def __init__(self, reason: str, details: str = "") -> None:
        super().__init__(reason)
        self.details = details


class CheckFailed(Exception):
    """What the image or the container did wrong."""


def log(message: str) -> None:
    print(f"[docker {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def run(argv: Sequence[str | Path], *, timeout: float, check: bool = True, stdin: object = None,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A command with its output captured; a non-zero exit raises CheckFailed with its tail."""
    try:
        result = subprocess.run([str(a) for a in argv], stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                capture_output=True, text=True, errors="replace", timeout=timeout,
                                env=env, cwd=cwd)
    except subprocess.TimeoutExpired as err:
        raise CheckFailed(f"{shlex.join(map(str, argv))} took more than {timeout:.0f} s") from err
    if check and result.returncode != 0:
        raise CheckFailed(f"{shlex.join(map(str, argv))} exited with {result.returncode}:\n"
                          + tail(result.stdout + result.stderr))
    return result


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def phase(key: str, description: str, timings: dict[str, float]) -> Iterator[None]:
    """A step of the check, timed under ``key``."""
    started = time.monotonic()
    log(f"{description} ...")
    yield
    timings[key] = time.monotonic() - started
    log(f"{description}: done in {timings[key]:.0f} s")


# -- installing -----------------------------------------------------------------------

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def find(program: str) -> str | None:
    return shutil.which(program, path=SBIN_PATH)


def install_packages() -> None:
    """docker.io and debootstrap from the Debian archive, when they are not there yet."""
    missing = [package for package, program in (("docker.io", "dockerd"), ("debootstrap", "debootstrap"))
               if find(program) is None]
    if not missing:
        return
    if find("apt-get") is None:
        raise Skip(f"{' and '.join(missing)} missing and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
               "-o", "DPkg::Lock::Timeout=600", *missing]
    log(f"apt-get install {' '.join(missing)}")
    if run(install, timeout=900, env=env, check=False).returncode != 0:
        run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=600"], timeout=600, env=env)
        run(install, timeout=900, env=env)


def docker_client() -> str:
    """docker.io's client (on some machines another one comes first on PATH)."""
    client = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else find("docker")
    expect(client, "no docker client after installing docker.io")
    return str(client)


# -- the engine -------------------------------------------------------------------------


class Engine:
    """A dockerd of this check's own, under ``workdir``: nothing it does outlives the check."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "docker.sock"
        self.log_path = workdir / "dockerd.log"
        self.client = docker_client()
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0",
                    "DOCKER_CONFIG": str(workdir / "client")}
        self.proc: subprocess.Popen[bytes] | None = None
        # dockerd 20.10 writes its identity there, whatever its data root: removed if it was not there before.
        self.trust_key = Path("/etc/docker/key.json")
        self.trust_key_was_there = self.trust_key.exists()

    def start(self) -> None:
        dockerd = find("dockerd")
        if dockerd is None:
            raise Skip("no dockerd after installing docker.io")
        # An empty config file of its own: /etc/docker/daemon.json may say otherwise.
        config = self.workdir / "daemon.json"
        config.write_text("{}\n")
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                [dockerd, "--config-file", str(config), "--host", f"unix://{self.socket}",
                 "--data-root", str(self.workdir / "data"),
                 "--exec-root", str(self.workdir / "exec"), "--pidfile", str(self.workdir / "dockerd.pid"),
                 "--bridge", "none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                 "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Skip(f"dockerd exited with {self.proc.returncode} at start", self.log_tail())
            if self.docker("version", timeout=20, check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise Skip("dockerd did not answer within 60 s", self.log_tail())

    def log_tail(self) -> str:
        return tail(self.log_path.read_text(errors="replace"), 20) if self.log_path.exists() else ""

    def docker(self, *args: str, timeout: float, check: bool = True,
               stdin: object = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run([self.client, *args], timeout=timeout, check=check, stdin=stdin, env=self.env, cwd=cwd)

    def stop(self) -> None:
        """TERM to dockerd (it stops its containerd and containers), KILL after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log("dockerd did not stop within 30 s of TERM: KILL")
                self.proc.kill()
                self.proc.wait(timeout=30)
        if not self.trust_key_was_there:
            self.trust_key.unlink(missing_ok=True)


def unmount_under(directory: Path) -> None:
    """Unmount what dockerd or debootstrap left mounted under ``directory``, deepest first."""
    prefix = str(directory) + "/"
    with open("/proc/self/mounts") as mounts:
        leftovers = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for mountpoint in sorted(leftovers, key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True, timeout=30)


# -- the base image -----------------------------------------------------------------


def base_image_name() -> str:
    """The image every FROM of the Dockerfile names, with the ARG defaults put in."""
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
    names = {re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], name)
             for name in re.findall(r"^FROM\s+(\S+)", text, re.M)} - stages
    expect(len(names) == 1, f"expected one base image in {DOCKERFILE}, found {sorted(names)}")
    return names.pop()


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (deb822 sources, else sources.list)."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in re.split(r"\n\s*\n", deb822.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):[ \t]*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    classic = Path("/etc/apt/sources.list")
    if classic.exists():
        found = re.search(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s", classic.read_text(), re.M)
        if found:
            return found.group(1)
    return "http://deb.debian.org/debian"


def cache_dir() -> Path | None:
    configured = os.environ.get("CLUSTERSERVE_CI_CACHE")
    if configured:
        return Path(configured)
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home_cache / "clusterserve-ci" if home_cache.is_dir() else None


def base_tarball(workdir: Path) -> Path:
    """The base image's root file system as a tar file: from the cache, or made now."""
    mirror = debian_mirror()
    recipe = json.dumps([BASE_RECIPE, SUITE, PACKAGES, mirror,
                         hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest()])
    name = f"debootstrap-{SUITE}-python3-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.tar"
    cache = cache_dir()
    if cache is not None:
        cached = cache / name
        if cached.exists():
            age = datetime.datetime.now() - datetime.datetime.fromtimestamp(cached.stat().st_mtime)
            if age < CACHE_MAX_AGE:
                log(f"base image from the cache: {cached}")
                return cached
    rootfs = workdir / "rootfs"
    # dpkg without an fsync per file, as in Debian's official images: a third
    # faster here, and a half-written image is thrown away anyway.
    (rootfs / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True)
    (rootfs / "etc/dpkg/dpkg.cfg.d/unsafe-io").write_text("force-unsafe-io\n")
    log(f"debootstrap --variant=minbase {SUITE} from {mirror}")
    run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, rootfs, mirror],
        timeout=1200)
    (rootfs / "usr/bin/python").symlink_to("python3")
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftovers).glob("*"):
            if path.is_file():
                path.unlink()
    target = workdir / name
    run(["tar", "--numeric-owner", "-C", rootfs, "-cf", target, "."], timeout=600)
    shutil.rmtree(rootfs)
    if cache is None:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for old in cache.glob(f"debootstrap-{SUITE}-python3-*.tar"):
            old.unlink()
        partial = cache / (name + ".partial")
        shutil.move(target, partial)
        partial.rename(cache / name)
        log(f"base image cached at {cache / name}")
        return cache / name
    except OSError as err:
        log(f"cannot cache the base image in {cache}: {err}")
        return target if target.exists() else cache / (name + ".partial")


def import_base_image(engine: Engine, tarball: Path, name: str) -> None:
    changes = [arg for change in BASE_IMAGE_CHANGES for arg in ("--change", change)]
    with open(tarball, "rb") as data:
        engine.docker("import", *changes, "-", name, stdin=data, timeout=600)


# -- in the container ---------------------------------------------------------------

# Run in the container by its Python: every process as (pid, ppid, state, uid, euid, argv).
PROCESS_TABLE = r"""
import json, os
table = []
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) == os.getpid():
        continue
    try:
        status = dict(line.split(":\t", 1) for line in open(f"/proc/{entry}/status").read().splitlines()
                      if ":\t" in line)
        argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    uids = status["Uid"].split()
    table.append({"pid": int(entry), "ppid": int(status["PPid"]), "state": status["State"][0],
                  "uid": int(uids[0]), "euid": int(uids[1]),
                  "argv": [a.decode(errors="replace") for a in argv if a]})
print(json.dumps(table))
"""


class Container:
    """The image run with --network host on a loopback port, as the README runs it."""

    def __init__(self, engine: Engine, port: int, stop_timeout: int, cmd_args: str) -> None:
        self.engine, self.port, self.stop_timeout = engine, port, stop_timeout
        self.engine.docker("rm", "-f", CONTAINER, timeout=60, check=False)
        self.engine.docker(
            "run", "-d", "--name", CONTAINER, "--network", "host", "--stop-timeout", str(stop_timeout),
            "-e", f"PORT={port}", "-e", f"CLUSTERSERVE_CMD_ARGS={cmd_args} --bind 127.0.0.1:{port}",
            IMAGE, timeout=120)

    def logs(self) -> str:
        result = self.engine.docker("logs", CONTAINER, timeout=60, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict:
        return json.loads(self.engine.docker("inspect", "-f", "{{json .State}}", CONTAINER, timeout=60).stdout)

    def processes(self) -> list[dict]:
        return json.loads(self.engine.docker("exec", CONTAINER, "python", "-c", PROCESS_TABLE, timeout=60).stdout)

    def sh(self, script: str) -> str:
        return self.engine.docker("exec", CONTAINER, "sh", "-c", script, timeout=60).stdout

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.logs():
            expect(self.state()["Running"], f"the container stopped while waiting for {text!r}")
            expect(time.monotonic() < deadline, f"no {text!r} in the container's log within {timeout:.0f} s")
            time.sleep(0.5)

    def remove(self) -> None:
        self.engine.docker("rm", "-f", CONTAINER, timeout=60, check=False)


def http_get(port: int, timeout: float = 10.0, keep_alive: bool = False,
             sock: socket.socket | None = None) -> tuple[bytes, socket.socket | None]:
    """One GET / on ``sock`` (or a new connection): the whole reply, and the socket if it stays open."""
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                     + (b"" if keep_alive else b"Connection: close\r\n") + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                sock.close()
                return data, None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        length = int(lengths[0]) if lengths else 0
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:  # cut: a failed request, not a closed idle connection
                sock.close()
                return head + b"\r\n\r\n" + body, None
            body += chunk
        reply = head + b"\r\n\r\n" + body
        if keep_alive and b"connection: close" not in head.lower():
            return reply, sock
        sock.close()
        return reply, None
    except OSError:
        sock.close()
        raise


HELLO = b"Hello, world!\n"


def served(reply: bytes) -> bool:
    return reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\n" + HELLO)


class LoadClient(threading.Thread):
    """GET / in a loop, bounded in count and time, on new or keep-alive connections.

    A keep-alive client retries once, on a new connection, only when the
    server closed a connection that had already served a request before any
    byte of the answer: what browsers and HTTP libraries do. Anything else
    (refused, reset, cut or wrong answer, timeout) is a failed request.
    """

    MAX_REQUESTS = 20_000

    def __init__(self, port: int, keep_alive: bool, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.keep_alive, self.deadline = port, keep_alive, deadline
        self.ok = self.retried = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        sock: socket.socket | None = None
        reused = False
        while (not self.stopping.is_set() and time.monotonic() < self.deadline
               and self.ok + len(self.failures) < self.MAX_REQUESTS):
            try:
                reply, kept = http_get(self.port, keep_alive=self.keep_alive, sock=sock)
            except OSError as err:
                reply, kept, error = b"", None, repr(err)
            else:
                error = ""
            if served(reply):
                self.ok += 1
                sock, reused = kept, kept is not None
                continue
            sock = None
            if not reply and reused:
                self.retried += 1
                reused = False
                continue
            self.failures.append(error or repr(reply[:120]))
            reused = False
        if sock is not None:
            sock.close()


# -- the checks ----------------------------------------------------------------------


def readme_stop_timeout() -> int:
    """The --stop-timeout of the README's docker run line."""
    found = re.findall(r"docker run [^\n`]*--stop-timeout (\d+)", README.read_text())
    expect(len(found) == 1, f"expected one `docker run ... --stop-timeout N` in the README, found {found}")
    return int(found[0])


def graceful_timeout(cmd_args: str) -> float:
    words = shlex.split(cmd_args)
    for index, word in enumerate(words):
        if word.startswith("--graceful-timeout="):
            return float(word.partition("=")[2])
        if word == "--graceful-timeout":
            return float(words[index + 1])
    return 30.0  # the setting's default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def workers_of_pid_1(table: list[dict]) -> set[int]:
    return {p["pid"] for p in table if p["ppid"] == 1 and "clusterserve" in " ".join(p["argv"])}


def check_serves_as_pid_1(container: Container) -> None:
    container.wait_for_log(f"Listening at: http://127.0.0.1:{container.port} (1)", timeout=90)
    container.wait_for_log(" ready, serving ", timeout=60)
    reply, _ = http_get(container.port, timeout=20)
    expect(served(reply), f"GET / answered {reply[:200]!r}")
    expect("Listening at: http://0.0.0.0" not in container.logs(), "it listens on 0.0.0.0 too")
    table = container.processes()
    (pid_1,) = [p for p in table if p["pid"] == 1]
    expect("clusterserve" in " ".join(pid_1["argv"]), f"PID 1 is {pid_1['argv']}, not the arbiter")
    log(f"ok: serves {HELLO!r} on 127.0.0.1:{container.port}; PID 1 is {shlex.join(pid_1['argv'])}")


def check_not_root(engine: Engine, container: Container) -> None:
    user = engine.docker("inspect", "-f", "{{.Config.User}}", IMAGE, timeout=60).stdout.strip()
    uid, _, gid = user.partition(":")
    expect(uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0,
           f"the image's USER is {user!r}: a numeric uid:gid other than root")
    table = container.processes()
    expect({(p["uid"], p["euid"]) for p in table} == {(int(uid), int(uid))},
           f"processes in the container run as {sorted({(p['uid'], p['euid']) for p in table})}, not {uid}")
    log(f"ok: USER {user}; all {len(table)} processes of the container run as uid {uid}")


def check_context_left_out(container: Container) -> None:
    """What .dockerignore keeps out of the build context is not in the image."""
    candidates = [name for name in (".git", ".venv", "tests/foreign/.venv", "tests/foreign/.cache")
                  if (ROOT / name).exists()]
    candidates += [".dockerignore", "deploy/docker/Dockerfile"]
    present = container.sh(f"cd /app && for p in {shlex.join(candidates)}; do "
                           '[ -e "$p" ] && echo "$p"; done; true')
    expect(not present.split(), f"in the image's /app, though .dockerignore leaves them out: {present.split()}")
    log(f"ok: not in the image: {', '.join(candidates)}")


def check_healthy(container: Container, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        health = (container.state().get("Health") or {})
        status = health.get("Status")
        if status == "healthy":
            log(f"ok: HEALTHCHECK healthy ({len(health.get('Log') or [])} checks)")
            return
        expect(status in ("starting", None), f"HEALTHCHECK says {status}: {json.dumps(health)[-800:]}")
        expect(time.monotonic() < deadline, f"HEALTHCHECK not healthy within {timeout:.0f} s: {health}")
        time.sleep(1)


def check_orphans_reaped(container: Container) -> None:
    """Processes whose parent exits are adopted by the arbiter (PID 1), which reaps them."""
    # Each docker exec's shell leaves a child behind and exits: the child is an orphan.
    orphans = [int(container.sh(f"sleep {seconds} >/dev/null 2>&1 & echo $!"))
               for seconds in (3, 4)]
    orphans.append(int(container.sh("(sleep 1; exit 3) >/dev/null 2>&1 & echo $!")))
    adopted = {p["pid"]: p for p in container.processes() if p["pid"] in orphans}
    expect(all(p["ppid"] == 1 for p in adopted.values()),
           f"the orphans' parent is not PID 1: {list(adopted.values())}")
    deadline = time.monotonic() + 30
    while True:
        table = container.processes()
        left = [p for p in table if p["pid"] in orphans]
        if not left:
            break
        expect(time.monotonic() < deadline, f"orphans not reaped within 30 s: {left}")
        time.sleep(0.5)
    zombies = [p for p in table if p["state"] == "Z"]
    expect(not zombies, f"zombies in the container: {zombies}")
    log(f"ok: {len(orphans)} orphans ({len(adopted)} seen adopted by PID 1) reaped; no zombie in the container")


def check_hup_under_load(engine: Engine, container: Container) -> None:
    before = workers_of_pid_1(container.processes())
    expect(before, "no workers under PID 1")
    clients = [LoadClient(container.port, keep_alive=index % 2 == 1, deadline=time.monotonic() + 60)
               for index in range(8)]
    for client in clients:
        client.start()
    try:
        time.sleep(1.5)
        ok_at_hup = sum(c.ok for c in clients)
        engine.docker("kill", "-s", "HUP", CONTAINER, timeout=60)
        container.wait_for_log("SIGHUP: reload done, generation 2 serves", timeout=45)
        deadline = time.monotonic() + 30
        while before & workers_of_pid_1(container.processes()):
            expect(time.monotonic() < deadline, "the old workers did not leave within 30 s of the reload")
            time.sleep(0.5)
        after = workers_of_pid_1(container.processes())
        ok_at_reloaded = sum(c.ok for c in clients)
        time.sleep(1.5)
    finally:
        for client in clients:
            client.stopping.set()
        for client in clients:
            client.join(timeout=30)
    ok = sum(c.ok for c in clients)
    failures = [failure for c in clients for failure in c.failures]
    expect(not any(c.is_alive() for c in clients), "a load client did not finish")
    expect(not failures, f"{len(failures)} of {ok + len(failures)} requests failed around the HUP: {failures[:10]}")
    expect(ok_at_hup > 0 and ok_at_reloaded > ok_at_hup and ok > ok_at_reloaded,
           f"requests did not go on through the reload: {ok_at_hup} before the HUP, "
           f"{ok_at_reloaded} when it was done, {ok} in all")
    expect(after and not before & after, f"workers before {sorted(before)}, after {sorted(after)}")
    log(f"ok: docker kill -s HUP under load: {ok} requests, 0 failed "
        f"({ok_at_reloaded - ok_at_hup} during the reload, {sum(c.retried for c in clients)} keep-alive retries); "
        f"workers {sorted(before)} -> {sorted(after)}")


def check_stop(engine: Engine, container: Container, graceful: float) -> None:
    started = time.monotonic()
    engine.docker("stop", CONTAINER, timeout=container.stop_timeout + 60)
    took = time.monotonic() - started
    state = container.state()
    expect(not state["Running"] and state["ExitCode"] == 0 and not state["OOMKilled"],
           f"docker stop: exit code {state['ExitCode']} ({state})")
    expect(took < container.stop_timeout,
           f"docker stop took {took:.1f} s, the stop timeout is {container.stop_timeout} s")
    expect("Shutting down: exit code 0" in container.logs(), "no 'Shutting down: exit code 0' in the log")
    log(f"ok: docker stop: exit code 0 in {took:.1f} s (stop timeout {container.stop_timeout} s, "
        f"graceful timeout {graceful:.0f} s)")


def check_container(engine: Engine) -> None:
    env = dict(item.split("=", 1) for item in json.loads(
        engine.docker("inspect", "-f", "{{json .Config.Env}}", IMAGE, timeout=60).stdout))
    cmd_args = env.get("CLUSTERSERVE_CMD_ARGS", "")
    graceful = graceful_timeout(cmd_args)
    stop_timeout = readme_stop_timeout()
    expect(stop_timeout > graceful,
           f"the README's --stop-timeout {stop_timeout} is not above the image's graceful timeout {graceful}")
    container = Container(engine, free_port(), stop_timeout, cmd_args)
    try:
        check_serves_as_pid_1(container)
        check_not_root(engine, container)
        check_context_left_out(container)
        check_healthy(container)
        check_orphans_reaped(container)
        check_hup_under_load(engine, container)
        check_stop(engine, container, graceful)
    except CheckFailed:
        print("-- the container's log (last 60 lines):\n" + tail(container.logs(), 60), flush=True)
        raise
    finally:
        container.remove()


# -- main ---------------------------------------------------------------------------


def main() -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))
    timings: dict[str, float] = {}
    engine: Engine | None = None
    workdir = Path(tempfile.mkdtemp(prefix="clusterserve-docker-"))
    try:
        if sys.platform != "linux" or os.geteuid() != 0:
            raise Skip("needs root on Linux, to install docker.io and run dockerd")
        base = base_image_name()
        with phase("install", "install docker.io and debootstrap", timings):
            install_packages()
        with phase("dockerd", "start dockerd", timings):
            engine = Engine(workdir)
            engine.start()
        with phase("base image", f"make the base image {base}", timings):
            import_base_image(engine, base_tarball(workdir), base)
        with phase("build", f"docker build --network host -f {DOCKERFILE.relative_to(ROOT)}", timings):
            build = engine.docker("build", "--network", "host", "-f", str(DOCKERFILE), "-t", IMAGE, ".",
                                  cwd=ROOT, timeout=1200)
            steps = re.findall(r"^Step \d+/\d+", build.stdout, re.M)
            log(f"built {IMAGE}: {len(steps)} steps")
        with phase("container", "run and check the container", timings):
            check_container(engine)
    except Skip as skip:
        if skip.details:
            print(f"-- dockerd's log:\n{skip.details}", flush=True)
        print(f"docker deploy check: SKIPPED: {skip}", flush=True)
        return SKIPPED
    except CheckFailed as failure:
        if engine is not None and engine.proc is not None and engine.proc.poll() is not None:
            print("-- dockerd's log:\n" + engine.log_tail(), flush=True)
        print(f"FAILED: {failure}", flush=True)
        print(f"docker deploy check: FAILED after {time.monotonic() - STARTED:.0f} s", flush=True)
        return 1
    except Exception:  # noqa: BLE001 - a bug in the check itself: its traceback, and the check fails
        traceback.print_exc()
        print(f"docker deploy check: FAILED after {time.monotonic() - STARTED:.0f} s (a bug in the check)",
              flush=True)
        return 1
    finally:
        if engine is not None:
            engine.stop()
        unmount_under(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    spent = ", ".join(f"{key} {seconds:.0f} s" for key, seconds in timings.items())
    print(f"docker deploy check: PASSED in {time.monotonic() - STARTED:.0f} s ({spent})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
