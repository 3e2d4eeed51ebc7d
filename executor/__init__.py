"""``consul-mesos-executor``: a Mesos custom executor that registers its task in Consul.

One executor idles beside every task, so what it imports is kept lean: value classes
are ``NamedTuple`` (no ``dataclasses``), tenacity loads on the first retry of a Consul
call, YAML only with ``EXECUTOR_CONFIG``, health checking only for tasks that have one.
"""
