"""TaskInfo → Consul services (marathon-consul conventions), as pure functions."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hooks.errors import SourceError
from hooks.mesos.provider import Rules, default_service_name, services_from_task

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/marathon-taskinfo.json"
TASK_ID = "web_hello.3f0e1a7c-2742-11e8-9c5b-0242ac110002"


def task(labels=None, ports=None, health=None) -> dict:
    info = {
        "task_id": {"value": TASK_ID},
        "labels": {"labels": labels or []},
        "discovery": {"ports": {"ports": ports or []}},
    }
    if health:
        info["health_check"] = health
    return info


def label(key, value):
    return {"key": key, "value": value}


def port(number, name="", *labels):
    return {"number": number, "name": name, "labels": {"labels": list(labels)}}


def bodies(info, rules=None):
    return [s.to_consul() for s in services_from_task(info, "10.0.3.7", rules or Rules())]


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference not present")
def test_reference_taskinfo_gives_marathon_consuls_result():
    info = json.loads(REFERENCE.read_text())
    hello, admin = bodies(info)
    task_tag = f"marathon-task:{TASK_ID}"
    assert (hello["ID"], hello["Name"], hello["Port"]) == ("10.0.3.7_31204", "hello", 31204)
    assert hello["Tags"] == ["marathon", "public", "production", task_tag]
    assert (admin["ID"], admin["Name"], admin["Port"]) == ("10.0.3.7_31877", "hello-admin", 31877)
    assert admin["Tags"] == ["marathon", "internal", "production", task_tag]
    assert hello["Check"] == {
        "CheckID": "service:10.0.3.7_31204",
        "HTTP": "http://10.0.3.7:31204/",
        "Method": "GET",
        "Interval": "10s",
        "Timeout": "5s",
        "Status": "passing",
        "DeregisterCriticalServiceAfter": "15m",
    }


def test_no_consul_label_anywhere_registers_nothing():
    assert bodies(task([label("team", "web")], [port(31000, "http")])) == []


@pytest.mark.parametrize("value", ["", "true"])
def test_empty_or_true_consul_label_derives_the_name_from_the_task_id(value):
    [service] = bodies(task([label("consul", value)], [port(31000), port(31001)]))
    assert service["Name"] == "web.hello" and service["Port"] == 31000


def test_default_name_rules():
    assert default_service_name(" /group/app.abc ") == "group-app"
    assert default_service_name("web_hello.3f0e") == "web.hello"


def test_port_with_several_names_gets_one_service_each_with_name_in_the_id():
    ports = [
        port(
            31000,
            "http",
            label("consul", "web, web-canary"),
            label("edge", "tag"),
            label("canary", "tag:web-canary"),
        )
    ]
    web, canary = bodies(task([label("consul", "")], ports))
    assert (web["ID"], canary["ID"]) == ("10.0.3.7_31000_web", "10.0.3.7_31000_web-canary")
    assert web["Tags"] == ["marathon", "edge", f"marathon-task:{TASK_ID}"]
    assert canary["Tags"] == ["marathon", "edge", "canary", f"marathon-task:{TASK_ID}"]


def test_port_placeholders_in_tags():
    labels = [label("consul", "app"), label("metrics={port:admin}", "tag")]
    [service] = bodies(task(labels, [port(31000, "http"), port(31001, "admin")]))
    assert "metrics=31001" in service["Tags"]


def test_global_tag_is_configurable_and_the_original_mode_drops_executor_tags():
    info = task([label("consul", "app"), label("prod", "tag")], [port(31000)])
    assert bodies(info, Rules(global_tag="mesos"))[0]["Tags"][0] == "mesos"
    assert bodies(info, Rules(global_tag=None, task_tag=False))[0]["Tags"] == ["prod"]


def test_tcp_and_command_health_checks():
    tcp = {"type": "TCP", "tcp": {"port": 31000}, "interval_seconds": 5.0, "timeout_seconds": 2.0}
    [service] = bodies(task([label("consul", "app")], [port(31000)], tcp))
    assert service["Check"]["TCP"] == "10.0.3.7:31000" and service["Check"]["Interval"] == "5s"
    command = {
        "type": "COMMAND",
        "command": {"value": "true"},
        "interval_seconds": 10.0,
        "timeout_seconds": 5.0,
    }
    [service] = bodies(task([label("consul", "app")], [port(31000)], command))
    assert service["Check"]["TTL"] == "25s" and service["Check"]["Status"] == "passing"


def test_ipv6_addresses_are_bracketed_in_check_targets():
    http = {"type": "HTTP", "http": {"port": 31000, "path": "/h"}}
    tcp = {"type": "TCP", "tcp": {"port": 31000}}
    [web] = services_from_task(task([label("consul", "a")], [port(31000)], http), "fd00::7")
    [raw] = services_from_task(task([label("consul", "a")], [port(31000)], tcp), "fd00::7")
    assert (web.id, web.check.target, raw.check.target) == (
        "fd00::7_31000",
        "http://[fd00::7]:31000/h",
        "[fd00::7]:31000",
    )


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (
            task([label("consul", "a"), label("x{port:nope}", "tag")], [port(31000, "http")]),
            "names port 'nope'",
        ),
        (task([label("consul", "a")], [{"number": "31000"}]), "is not a port number"),
        (task([label("consul", "a")], [port(31000)], {"type": "GRPC"}), "'GRPC' is not supported"),
        (task([label("consul", "a")], []), "no ports"),
        (task([label("consul", "a\udc80")], [port(31000)]), "is not valid UTF-8"),
        (
            task([label("consul", "a")], [port(31000)], {"type": "TCP", "interval_seconds": "x"}),
            "interval_seconds 'x' is not a number of seconds",
        ),
    ],
)
def test_bad_task_input_is_a_one_line_error(info, message):
    with pytest.raises(SourceError, match=message.replace("(", r"\(")):
        services_from_task(copy.deepcopy(info), "10.0.3.7")
