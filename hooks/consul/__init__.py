"""The registration core: what a service is, how to reach Consul, how to register.

The values and configuration import cheaply; the HTTP client (and so
``requests``) loads on first use, which keeps ``--help`` and ``--version`` fast.
"""

from __future__ import annotations

from hooks.consul.config import ConsulConfig
from hooks.consul.model import Check, ServiceInstance

__all__ = ["Check", "ConsulClient", "ConsulConfig", "Registrar", "ServiceInstance"]


def __getattr__(name: str):
    if name == "ConsulClient":
        from hooks.consul.client import ConsulClient

        return ConsulClient
    if name == "Registrar":
        from hooks.consul.registrar import Registrar

        return Registrar
    raise AttributeError(name)
