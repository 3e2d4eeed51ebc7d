"""Pieces the demo and the benchmark both stage: a pod whose readiness probe passes, and the
environment the hook gets inside that pod, served by the doubles in ``tests/doubles``."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
TASK_APP = ROOT / "tests" / "apps" / "task_app.py"


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def ready_server() -> Iterator[int]:
    """A local HTTP server answering 200 to everything (a passing probe); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def sample_pod(port: int, **annotations: str) -> dict:
    """Pod ``shop/web-1`` labelled ``consul: web`` with a readiness probe on ``port``."""
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "labels": {"consul": "web"},
            "annotations": annotations,
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "web",
                    "ports": [{"containerPort": port}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": port},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
        "status": {"podIP": "127.0.0.1"},
    }


def hook_env(workdir: Path, consul_addr: str, kube) -> dict[str, str]:
    """What ``consul-registration-hook`` sees in that pod (kubeconfig access to the double)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "CONSUL_HTTP_ADDR": consul_addr,
        "KUBERNETES_POD_NAME": "web-1",
        "KUBERNETES_POD_NAMESPACE": "shop",
        **kube.kubeconfig_env(workdir),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
