"""Synchronous Consul registration core and the ``consul-registration-hook`` CLI."""

__version__ = "0.1.0"
