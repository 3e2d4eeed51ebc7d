"""Kubernetes mode: register the services of the pod this hook runs in.

``register k8s`` runs as a container's ``postStart`` hook and ``deregister k8s``
as its ``preStop`` hook. The modules, from pure to I/O:

* :mod:`hooks.k8s.provider` — pod (+ node labels, env) → services; no I/O.
* :mod:`hooks.k8s.api` — reads the pod and its node from the Kubernetes API.
* :mod:`hooks.k8s.probe` — runs a container probe until it passes.
* :mod:`hooks.k8s.hook` — the two flows the CLI calls.

Nothing here is imported by ``--help``/``--version``; the CLI loads
:mod:`hooks.k8s.hook` only when a ``k8s`` command runs.
"""
