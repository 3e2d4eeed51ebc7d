"""``docker-compose.yml``, the dev cluster: checked as a file, since no Docker engine runs here.

Nothing in this module starts a container; it reads the file the way Compose would and
checks what would otherwise only fail at ``docker compose up``.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
AGENT = "mesos-agent"
EXECUTOR_DIR = "/opt/consul-registration-hook"
# The ports the README tells people to open, and the service that must publish each.
README_PORTS = {5050: "mesos-master", 5051: AGENT, 8080: "marathon", 8500: "consul"}


@pytest.fixture(scope="module")
def services() -> dict:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert set(compose) == {"services"}, "keep it small: services only"
    return compose["services"]


def build_dist_module():
    spec = importlib.util.spec_from_file_location("build_dist", ROOT / "tools" / "build_dist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def volumes(service: dict) -> list[tuple[str, str, str]]:
    """``(host path, container path, mode)`` of each short-form bind mount."""
    mounts = []
    for volume in service.get("volumes") or []:
        host, container, *mode = volume.split(":")
        mounts.append((host, container, mode[0] if mode else "rw"))
    return mounts


def test_every_service_has_a_pinned_image_or_an_existing_build(services):
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            build = service["build"]
            context = ROOT / (build if isinstance(build, str) else build["context"])
            dockerfile = context / "Dockerfile"
            assert dockerfile.is_file(), f"{name}: no {dockerfile}"
            images = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
        else:
            images = [service["image"]]
        for image in images:
            tag = image.rpartition(":")[2] if ":" in image else "latest"
            assert tag != "latest", f"{name}: {image} is not pinned to a version"
        for dependency in service.get("depends_on") or []:
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_agent_image_has_a_python_the_executor_runs_on(services):
    dockerfile = (ROOT / services[AGENT]["build"] / "Dockerfile").read_text()
    python = re.search(r"cpython-(\d+)\.(\d+)\.\d+", dockerfile)
    assert python and (int(python[1]), int(python[2])) >= (3, 9)
    assert re.search(r"PYTHON_SHA256=[0-9a-f]{64}\b", dockerfile), "the download is not pinned"
    assert "sha256sum -c" in dockerfile
    assert "ln -s /opt/python/bin/python3 /usr/local/bin/python3" in dockerfile


def test_mounted_host_paths_exist_except_the_built_dist(services):
    dist = build_dist_module().DIST
    for name, service in services.items():
        for host, _, _ in volumes(service):
            path = (ROOT / host).resolve()
            if path == dist:
                continue  # `make dist` creates it; the README says to run that first
            assert path.exists(), f"{name} mounts {host}, which is not in the repository"


def test_agent_mounts_dist_where_the_examples_point_the_executor(services):
    [(host, target, mode)] = volumes(services[AGENT])
    assert ((ROOT / host).resolve(), target) == (build_dist_module().DIST, EXECUTOR_DIR)
    # Marathon runs `chmod ug+rx '<executor>' && exec ...`; chmod fails on a read-only mount.
    assert mode == "rw"
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = config.get("options.entry_points", "console_scripts")
    examples = sorted((ROOT / "examples" / "marathon").glob("*.json"))
    assert examples
    for example in examples:
        executor = json.loads(example.read_text())["executor"]
        assert executor.startswith(f"{EXECUTOR_DIR}/"), example.name
        assert f"{Path(executor).name} =" in scripts, f"{example.name}: not a built file"


def test_agent_reaches_zookeeper_and_consul_by_service_name(services):
    env = environment(services[AGENT])
    assert re.fullmatch(r"zk://zookeeper:2181/mesos", env["MESOS_MASTER"])
    executor_env = json.loads(env["MESOS_EXECUTOR_ENVIRONMENT_VARIABLES"])
    assert executor_env["CONSUL_HTTP_ADDR"] == "consul:8500"
    # Setting the variables replaces the agent's environment: PATH must be there for python3.
    assert "/usr/local/bin" in executor_env["PATH"].split(":")
    # Master and Marathon find ZooKeeper the same way: every zk:// host is a service here.
    zk_hosts = set(re.findall(r"zk://([\w.-]+):2181/", COMPOSE.read_text()))
    assert zk_hosts == {"zookeeper"} and "zookeeper" in services
    assert "consul" in services
    assert services[AGENT]["hostname"] == env["MESOS_HOSTNAME"]


def test_the_ports_the_readme_names_are_published(services):
    for port, name in README_PORTS.items():
        published = {str(p).split(":")[0] for p in services[name].get("ports") or []}
        assert str(port) in published, f"{name} does not publish {port}"
