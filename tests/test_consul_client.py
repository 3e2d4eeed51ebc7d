"""The Consul client and registrar against an agent: the double, and a real one when
``CONSUL_TEST_HTTP_ADDR`` is set (``consul agent -dev``)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from hooks.consul import Check, ConsulClient, ConsulConfig, Registrar, ServiceInstance
from hooks.errors import ConsulError


def client_for(agent, **env) -> ConsulClient:
    config = ConsulConfig.from_env(
        {
            "CONSUL_HTTP_ADDR": agent.addr,
            "CONSUL_CATALOG_WAIT": "5s",
            "CONSUL_RETRY_DEADLINE": "2s",
            **env,
        }
    )
    return ConsulClient(config)


def service(sid: str, check: Check | None = None) -> ServiceInstance:
    return ServiceInstance(sid, "crh-test", "127.0.0.1", 18080, ("t1",), check)


def agent_checks(agent) -> dict:
    with urllib.request.urlopen(f"http://{agent.addr}/v1/agent/checks") as response:
        return json.load(response)


def test_register_reads_back_and_is_listed_by_the_catalog(agent):
    client = client_for(agent)
    Registrar(client).register([service("127.0.0.1_18080")])
    try:
        assert agent.service("127.0.0.1_18080")["Tags"] == ["t1"]
        assert "127.0.0.1_18080" in client.catalog_ids("crh-test")
    finally:
        Registrar(client).deregister([service("127.0.0.1_18080")])
    assert agent.service("127.0.0.1_18080") is None
    assert "127.0.0.1_18080" not in client.catalog_ids("crh-test")


def test_deregistering_an_unknown_id_is_success(agent):
    client = client_for(agent)
    assert client.deregister("127.0.0.1_1") is False
    assert Registrar(client).deregister([service("127.0.0.1_1")]) == []


def test_ttl_check_is_passed_by_its_owner(agent):
    client = client_for(agent)
    ttl_service = service("127.0.0.1_18081", Check.ttl_check(30, deregister_critical_after=60))
    Registrar(client).register([ttl_service])
    try:
        assert agent_checks(agent)[ttl_service.check_id]["Status"] == "critical"
        client.update_ttl(ttl_service.check_id, "passing", "command check passed")
        check = agent_checks(agent)[ttl_service.check_id]
        assert (check["Status"], check["Output"]) == ("passing", "command check passed")
    finally:
        Registrar(client).deregister([ttl_service])


def test_a_definition_consul_rejects_fails_at_once_with_its_reason(agent):
    client = client_for(agent)
    bad = service("127.0.0.1_18082", Check("http", "http://127.0.0.1:18082/"))  # no interval
    with pytest.raises(ConsulError) as error:
        client.register(bad)
    assert error.value.status == 400
    assert "Consul refused to register service 'crh-test' (id 127.0.0.1_18082): 400 " in str(
        error.value
    )
    assert "Interval" in str(error.value)
    assert agent.service("127.0.0.1_18082") is None


def test_garbage_from_consul_is_a_consul_error_and_rolls_back(consul):
    client = client_for(consul)
    consul.fail_when(lambda r: r.method == "GET" and "/v1/agent/service/" in r.path, 200, "<html>")
    with pytest.raises(ConsulError, match="Consul answered something that is not JSON"):
        Registrar(client).register([service("127.0.0.1_18083")])
    assert consul.services() == {}
