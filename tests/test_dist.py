"""``make dist``: the single-file executables, run the way operators run them.

The files are built once for this module (``tools/build_dist.py --out <tmp>``), then run by
bare interpreters of the oldest and newer supported Pythons (pyenv's, which have none of
the project's dependencies) with ``-I``, or through their own ``#!/usr/bin/env python3``
with only that interpreter on PATH. Deselect with ``-m "not dist"``: building takes a while.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from hooks import __version__
from tests.conftest import CLI_REGISTER, CLI_REGISTER_BODY, one_line_error
from tests.doubles.consul import ConsulDouble
from tests.doubles.mesos_agent import MesosAgentDouble, marathon_task_info

pytestmark = pytest.mark.dist

ROOT = Path(__file__).resolve().parent.parent
TASK_APP = ROOT / "tests" / "apps" / "task_app.py"
HOOK = "consul-registration-hook"
EXECUTOR = "consul-mesos-executor"
ENTRY_POINTS = {HOOK: "hooks.cli", EXECUTOR: "executor.cli"}
# What must come from the archive: a clean interpreter cannot import any of it by itself.
DEPENDENCIES = ("requests", "urllib3", "certifi", "tenacity", "yaml", "pymesos", "hooks")
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def clean_python(minor: str):
    """A pytest param: pyenv's newest ``minor`` interpreter, or a skip saying why not."""
    found = sorted(
        PYENV_VERSIONS.glob(f"{minor}.*/bin/python3"),
        key=lambda p: [int(part) for part in p.parts[-3].split(".") if part.isdigit()],
    )
    if not found:
        return pytest.param(None, id=minor, marks=pytest.mark.skip(f"no Python {minor} in pyenv"))
    python = found[-1]
    probe = "import importlib.util as u, sys; print(*[n for n in sys.argv[1:] if u.find_spec(n)])"
    importable = subprocess.run([python, "-I", "-c", probe, *DEPENDENCIES], capture_output=True)
    if importable.stdout.strip():
        reason = f"{python} is not clean: it can import {importable.stdout.decode().strip()}"
        return pytest.param(None, id=minor, marks=pytest.mark.skip(reason))
    return pytest.param(str(python), id=minor)


# The oldest Python setup.cfg allows, the one current LTS distributions ship, and the newest.
PYTHONS = [clean_python("3.9"), clean_python("3.12"), clean_python("3.13")]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_dist.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out


@pytest.fixture(params=PYTHONS)
def python(request) -> str:
    return request.param


def bare_env(**extra: str) -> dict[str, str]:
    """No HOME and nothing from the developer's shell, as in a minimal container."""
    return {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1", **extra}


def shebang_path(python: str, tmp_path: Path) -> str:
    """A PATH on which ``python3`` is ``python``, so ``/usr/bin/env python3`` finds it."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "python3").unlink(missing_ok=True)
    (shim / "python3").symlink_to(python)
    return f"{shim}:/usr/bin:/bin"


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env or bare_env(), capture_output=True, text=True, timeout=60)


# -- the files ---------------------------------------------------------------------------------


def test_each_executable_is_one_pure_python_zipapp(dist):
    for name in (HOOK, EXECUTOR):
        path = dist / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        assert path.read_bytes().startswith(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            main = archive.read("__main__.py").decode()
        assert f"from {ENTRY_POINTS[name]} import main" in main
        assert not [n for n in names if n.endswith((".so", ".pyd", ".pyc"))]
        assert not [n for n in names if "__pycache__/" in n or "/tests/" in n]
        assert not [n for n in names if n.startswith(("kazoo", "bin/"))]
        for package in ("hooks/", "executor/", "pymesos/", "requests/", "certifi/cacert.pem"):
            assert any(n.startswith(package) for n in names), f"{package} missing from {name}"


def test_tarball_unpacks_like_the_init_container(dist, tmp_path):
    hooks_dir = tmp_path / "hooks"
    hooks_dir.mkdir()
    tarball = (dist / f"{HOOK}.tar.gz").read_bytes()
    # The seed's init container: `gsutil cat ${GS_URL} | tar -C /hooks -zxvf -`
    untar = subprocess.run(
        ["tar", "-C", str(hooks_dir), "-zxvf", "-"], input=tarball, capture_output=True, check=True
    )
    assert untar.stdout.decode().split() == [HOOK]
    unpacked = hooks_dir / HOOK
    assert os.access(unpacked, os.X_OK)
    assert unpacked.read_bytes() == (dist / HOOK).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        assert [(m.name, m.isfile()) for m in tar.getmembers()] == [(HOOK, True)]


# -- run by clean interpreters -----------------------------------------------------------------


def test_version_and_help(dist, python):
    for name in (HOOK, EXECUTOR):
        version = run(python, "-I", str(dist / name), "--version")
        assert (version.returncode, version.stdout) == (0, f"{name} {__version__}\n")
        assert version.stderr == ""
        usage = run(python, "-I", str(dist / name), "--help")
        assert usage.returncode == 0 and usage.stdout.startswith(f"usage: {name}"), usage.stderr
    sub = run(python, "-I", str(dist / HOOK), "register", "k8s", "--help")
    assert sub.returncode == 0 and "--health-check-timeout" in sub.stdout


def test_hook_registers_and_deregisters_through_its_shebang(dist, python, tmp_path):
    # The unpacked tarball, run as the Kubernetes hook runs it: the file itself, no HOME.
    with ConsulDouble() as consul:
        env = bare_env(
            PATH=shebang_path(python, tmp_path),
            CONSUL_HTTP_ADDR=consul.addr,
            CONSUL_CATALOG_WAIT="2s",
        )
        hook = str(dist / HOOK)
        registered = run(hook, *CLI_REGISTER, env=env)
        assert registered.returncode == 0, registered.stderr
        assert consul.registrations() == [CLI_REGISTER_BODY]
        gone = run(hook, "deregister", "cli", "--service-id", "127.0.0.1_8080", env=env)
        assert gone.returncode == 0, gone.stderr
        assert consul.services() == {}
        assert "Traceback" not in registered.stderr + gone.stderr

        # A failure is still one line and a non-zero status from inside the archive.
        consul.refuse_connections()
        env["CONSUL_RETRY_DEADLINE"] = "1s"
        down = run(hook, "deregister", "cli", "--service-id", "x", env=env)
        assert "Consul" in one_line_error(down)


CA_CHECK = """
import os, ssl, sys
sys.path.insert(0, sys.argv[1])
import certifi, requests.utils
assert certifi.__file__.startswith(sys.argv[1]), certifi.__file__
bundle = requests.utils.DEFAULT_CA_BUNDLE_PATH
context = ssl.create_default_context(cafile=bundle)
print(len(context.get_ca_certs()), bundle, os.path.isfile(bundle))
"""


def test_certifi_bundle_works_from_inside_the_zip(dist, python, tmp_path):
    # certifi hands out a copy extracted to TMPDIR (the archive stays read-only), removed at
    # exit; requests verifies HTTPS against it by default.
    result = run(python, "-I", "-c", CA_CHECK, str(dist / HOOK), env=bare_env(TMPDIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    count, bundle, existed = result.stdout.split()
    assert int(count) > 50 and existed == "True"
    assert Path(bundle).parent == tmp_path
    assert not Path(bundle).exists()


# -- the executor, launched by the Mesos agent double ----------------------------------------


def test_executor_launches_registers_and_kills(dist, python, tmp_path):
    app = {
        "id": "/dist/hello",
        "cmd": f"python3 {TASK_APP} --port $PORT0 --events $MESOS_SANDBOX/events",
        "labels": {"consul": "hello"},
        "portDefinitions": [{"port": 0, "name": "http"}],
    }
    executor = str(dist / EXECUTOR)
    settings = {
        "PATH": shebang_path(python, tmp_path),  # python3 for the shebang and the task
        "PYTHONNOUSERSITE": "1",
        "EXECUTOR_PROPAGATION_DELAY": "0.2s",
        "EXECUTOR_KILL_GRACE_PERIOD": "1s",
        "CONSUL_CATALOG_WAIT": "1s",
    }
    with ConsulDouble() as consul, MesosAgentDouble() as agent:
        task = marathon_task_info(app, executor_path=executor)
        port = task["discovery"]["ports"]["ports"][0]["number"]
        proc = agent.launch_executor(
            executor,
            task,
            sandbox=str(tmp_path / "sandbox"),
            extra_env={**settings, "CONSUL_HTTP_ADDR": consul.addr},
        )
        running = agent.wait_for_update("TASK_RUNNING", timeout=20)
        # The agent's shell exec'd the file; its shebang found the clean interpreter.
        assert os.path.realpath(f"/proc/{proc.pid}/exe") == os.path.realpath(python)
        [registered] = consul.registrations()
        assert (registered["ID"], registered["Name"], registered["Port"]) == (
            f"127.0.0.1_{port}",
            "hello",
            port,
        )
        assert registered["Tags"] == ["marathon", f"marathon-task:{proc.task_id}"]
        register_call = next(r for r in consul.requests if r.path == "/v1/agent/service/register")
        assert register_call.time < running.time

        agent.kill(proc.task_id)
        killed = agent.wait_for_update("TASK_KILLED", timeout=20)
        [(deregistered, service_id)] = consul.deregistrations()
        assert service_id == registered["ID"] and deregistered < killed.time
        assert consul.services() == {}
        assert proc.wait_exit(15) == 0
        assert "Traceback" not in proc.stderr()
