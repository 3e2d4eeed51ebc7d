"""The registration core's pure parts: durations, Consul configuration, service bodies."""

from __future__ import annotations

import pytest

from hooks.consul import Check, ConsulConfig, ServiceInstance
from hooks.durations import go_duration, parse_duration
from hooks.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("1m30s", 90),
        ("250ms", 0.25),
        ("1.5h", 5400),
        ("30", 30),
        ("2.5", 2.5),
        ("5secs", 5),
        ("15mins", 900),
        ("2hrs", 7200),
        ("1days", 86400),
        ("0", 0),
        ("100us", 1e-4),
    ],
)
def test_durations_accept_go_mesos_and_plain_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "10 s", "10d", "s10", "1m-5s", "--1"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(10, "10s"), (90, "1m30s"), (900, "15m"), (0.25, "250ms"), (3600, "1h")]
)
def test_go_duration_is_what_consul_parses(seconds, text):
    assert go_duration(seconds) == text


def test_consul_config_defaults():
    config = ConsulConfig.from_env({})
    assert config.base_url == "http://127.0.0.1:8500"
    assert config.token is None and config.verify is True
    assert config.catalog_wait == 10 and config.deregister_critical_after == 900


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"CONSUL_HTTP_ADDR": "10.0.0.1:8500"}, "http://10.0.0.1:8500"),
        ({"CONSUL_HTTP_ADDR": "https://consul.local:8501"}, "https://consul.local:8501"),
        ({"CONSUL_HTTP_ADDR": "http://c:8500", "CONSUL_HTTP_SSL": "true"}, "https://c:8500"),
        ({"CONSUL_HTTP_ADDR": "c:8500/prefix/"}, "http://c:8500/prefix"),
    ],
)
def test_consul_address_forms(env, url):
    assert ConsulConfig.from_env(env).base_url == url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONSUL_HTTP_ADDR": "ftp://c:21"}, "CONSUL_HTTP_ADDR: unknown scheme 'ftp'"),
        ({"CONSUL_HTTP_ADDR": "unix:///sock"}, "unix sockets are not supported"),
        ({"CONSUL_HTTP_SSL": "yes"}, "CONSUL_HTTP_SSL: invalid boolean 'yes'"),
        ({"CONSUL_CATALOG_WAIT": "soon"}, "CONSUL_CATALOG_WAIT: invalid duration 'soon'"),
        ({"CONSUL_CLIENT_CERT": "/c.pem"}, "must be set together"),
        ({"CONSUL_CACERT": "/nonexistent/ca.pem"}, "CONSUL_CACERT: /nonexistent/ca.pem does not"),
        ({"CONSUL_HTTP_TOKEN_FILE": "/nonexistent/t"}, "cannot read CONSUL_HTTP_TOKEN_FILE"),
    ],
)
def test_bad_consul_settings_are_one_line_errors(env, message):
    with pytest.raises(ConfigError) as error:
        ConsulConfig.from_env(env)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_token_sources_in_consuls_order(tmp_path):
    env_file, acl_file = tmp_path / "env-token", tmp_path / "acl-token"
    env_file.write_text("  from-env-file\n")
    acl_file.write_text("from-acl-file\n")
    env = {"CONSUL_HTTP_TOKEN": "from-env", "CONSUL_HTTP_TOKEN_FILE": str(env_file)}
    assert ConsulConfig.from_env({"CONSUL_HTTP_TOKEN": "from-env"}).token == "from-env"
    assert ConsulConfig.from_env(env).token == "from-env-file"
    assert ConsulConfig.from_env(env, token_file=str(acl_file)).token == "from-acl-file"
    empty = tmp_path / "empty"
    empty.write_text("")
    assert ConsulConfig.from_env({**env, "CONSUL_HTTP_TOKEN_FILE": str(empty)}).token == "from-env"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"two tokens\n", "holds more than one token"), (b"\xff\xfe", "is not UTF-8 text")],
)
def test_unusable_token_files_are_one_line_errors_that_do_not_echo_them(tmp_path, content, message):
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as error:
        ConsulConfig.from_env({"CONSUL_HTTP_TOKEN_FILE": str(path)})
    assert "two" not in str(error.value)


def test_token_never_shows_in_repr_or_description():
    config = ConsulConfig.from_env({"CONSUL_HTTP_TOKEN": "s3cr3t-token"})
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config.describe())


def test_service_body_carries_deregister_critical_after_on_its_check():
    check = Check.http("http://10.1.2.3:8080/health", 10, 2, deregister_critical_after=60)
    service = ServiceInstance("10.1.2.3_8080", "web", "10.1.2.3", 8080, ("a", "b"), check)
    assert service.to_consul() == {
        "ID": "10.1.2.3_8080",
        "Name": "web",
        "Tags": ["a", "b"],
        "Address": "10.1.2.3",
        "Port": 8080,
        "Check": {
            "CheckID": "service:10.1.2.3_8080",
            "HTTP": "http://10.1.2.3:8080/health",
            "Method": "GET",
            "Interval": "10s",
            "Timeout": "2s",
            "DeregisterCriticalServiceAfter": "1m",
        },
    }


def test_ttl_and_tcp_check_bodies():
    ttl = Check.ttl_check(25, status="passing").to_consul("c1")
    assert ttl == {
        "CheckID": "c1",
        "TTL": "25s",
        "Status": "passing",
        "DeregisterCriticalServiceAfter": "15m",
    }
    tcp = Check.tcp("10.0.0.1:53", 5, 1).to_consul("c2")
    assert tcp["TCP"] == "10.0.0.1:53" and tcp["Interval"] == "5s" and "HTTP" not in tcp
