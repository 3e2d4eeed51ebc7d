"""``register cli`` / ``deregister cli``: one service described entirely by flags."""

from __future__ import annotations

from hooks.consul import Check, ConsulConfig, ServiceInstance
from hooks.errors import ConfigError

CHECK_INTERVAL = 30.0
CHECK_TIMEOUT = 30.0


def service_from_flags(
    name: str | None,
    address: str | None,
    port: str | None,
    tags: str,
    check_path: str,
    deregister_critical_after: float,
) -> ServiceInstance:
    """The service the original's cli mode registers: id ``<ip>_<port>``, HTTP check every 30s."""
    for flag, value in (
        ("--service-name", name),
        ("--pod-ip", address),
        ("--container-port", port),
    ):
        if not value:
            raise ConfigError(f"{flag} is required")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--container-port: {port!r} is not a port number") from None
    if not 0 < number < 65536:
        raise ConfigError(f"--container-port: {number} is out of range")
    path = check_path if not check_path or check_path.startswith("/") else "/" + check_path
    return ServiceInstance(
        id=f"{address}_{number}",
        name=name,
        address=address,
        port=number,
        tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
        check=Check.http(
            f"http://{address}:{number}{path}",
            CHECK_INTERVAL,
            CHECK_TIMEOUT,
            deregister_critical_after=deregister_critical_after,
        ),
    )


def register(consul: ConsulConfig, *, name, address, port, tags: str, check_path: str) -> int:
    from hooks.consul import ConsulClient, Registrar

    service = service_from_flags(
        name, address, port, tags, check_path, consul.deregister_critical_after
    )
    Registrar(ConsulClient(consul)).register([service])
    return 0


def deregister(consul: ConsulConfig, *, service_id: str | None) -> int:
    from hooks.consul import ConsulClient, Registrar
    from hooks.errors import ConsulError

    if not service_id:
        raise ConfigError("--service-id is required")
    client = ConsulClient(consul)
    # The catalog is looked up by name; read it from the agent while it still knows it.
    known = client.service(service_id)
    service = ServiceInstance(service_id, (known or {}).get("Service", ""), "", 0)
    failures = Registrar(client).deregister([service], wait=bool(service.name))
    if failures:
        raise ConsulError(failures[0])
    return 0
