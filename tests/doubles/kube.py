"""A Kubernetes API server double for tests: HTTPS on a loopback port, pods and nodes only.

It serves ``GET /api/v1/namespaces/{ns}/pods/{name}`` and ``GET /api/v1/nodes/{name}``
the way the real API server does (see ``shared/reference/kubernetes.md`` §3): JSON
objects, ``Status`` objects for errors (401 without the right bearer token, 403 when a
kind is forbidden, 404 for unknown objects), over TLS with its own CA. Typical use::

    with KubeDouble() as kube:
        kube.add_pod(pod)
        env = {**kube.kubeconfig_env(tmp_path), "KUBERNETES_POD_NAME": "web-1", ...}
        run_the_hook(env)
        assert kube.requests[0].headers["Authorization"] == "Bearer test-token"

Both access paths of a client can be exercised: :meth:`write_kubeconfig` (server,
certificate-authority, token) and :meth:`service_account_dir` (token, ca.crt,
namespace; point ``KUBERNETES_SERVICE_ACCOUNT_DIR`` at it, see :meth:`in_cluster_env`).

Faults: :meth:`set_forbidden` (403 for pods or nodes), :meth:`set_garbage` (200 with a
non-JSON body), :meth:`delete_pod` (404), a pod whose IP shows up late
(``pod_ip_after``), and :meth:`stop` (connection refused).
"""

from __future__ import annotations

import copy
import json
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Union
from urllib.parse import unquote, urlsplit

import trustme

__all__ = ["KubeDouble", "KubeRequest"]

SERVICE_ACCOUNT = "system:serviceaccount:default:consul-hook"
GARBAGE = b"<html><body>Please log in to the corporate proxy</body></html>"

#: seconds after add_pod/set_pod, or a callable saying whether the IP is published yet
IpAfter = Union[float, Callable[[], bool], None]


@dataclass(frozen=True)
class KubeRequest:
    """One request as the double received it."""

    time: float  # time.monotonic() when it arrived
    method: str
    path: str  # without the query, percent-decoded
    headers: dict[str, str]  # names lower-cased
    client_cn: str | None = None  # common name of the client certificate, if one was sent

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class _Pod:
    body: dict[str, Any]
    since: float
    ip_after: IpAfter

    def view(self) -> dict[str, Any]:
        pod = copy.deepcopy(self.body)
        if not self._ip_published():
            status = pod.get("status") or {}
            status.pop("podIP", None)
            status.pop("podIPs", None)
        return pod

    def _ip_published(self) -> bool:
        if self.ip_after is None:
            return True
        if callable(self.ip_after):
            return bool(self.ip_after())
        return time.monotonic() - self.since >= self.ip_after


def status(code: int, reason: str, message: str, **details: str) -> dict[str, Any]:
    """A ``Status`` object as the API server sends it with an error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class KubeDouble:
    """An HTTPS Kubernetes API double on ``127.0.0.1`` with its own CA (via trustme)."""

    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._dir = Path(tempfile.mkdtemp(prefix="kube-double-"))
        self.ca_pem_path = str(self._dir / "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_pem_path)
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._forbidden: set[str] = set()
        self._garbage = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        #: every request in arrival order (a live list: copy it before iterating)
        self.requests: list[KubeRequest] = []

    # -- lifecycle

    def start(self) -> KubeDouble:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._cert.configure_cert(context)
        # Like the API server: a client certificate from our CA authenticates too.
        context.verify_mode = ssl.CERT_OPTIONAL
        self._ca.configure_trust(context)
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.double = self
        # The handshake happens on the handler's first read, in its own thread, so a
        # client that never finishes one cannot block the accept loop.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._port = server.server_address[1]
        self._server = server
        # A short poll interval keeps stop() (and so every test's teardown) quick.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="kube-double", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connects are refused from now on). Idempotent; keeps the objects."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Stop and remove the temporary files (CA, kubeconfig-independent state)."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> KubeDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("KubeDouble is not started: no port yet")
        return self._port

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``, the API server URL."""
        return f"https://127.0.0.1:{self.port}"

    # -- objects

    def add_pod(self, pod: dict[str, Any], *, pod_ip_after: IpAfter = None) -> None:
        """Serve ``pod`` (its ``metadata.namespace``/``name`` say where).

        ``pod_ip_after``: hide ``status.podIP`` until this many seconds have passed, or
        until the callable returns true (the kubelet publishes the IP late, #85966).
        """
        meta = pod["metadata"]
        self.set_pod(meta.get("namespace", "default"), meta["name"], pod, pod_ip_after=pod_ip_after)

    def set_pod(
        self, namespace: str, name: str, pod: dict[str, Any], *, pod_ip_after: IpAfter = None
    ) -> None:
        """Replace (or add) the pod served as ``namespace/name``."""
        with self._lock:
            self._pods[(namespace, name)] = _Pod(copy.deepcopy(pod), time.monotonic(), pod_ip_after)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Forget the pod: it answers 404 from now on."""
        with self._lock:
            self._pods.pop((namespace, name), None)

    def add_node(self, node: dict[str, Any]) -> None:
        with self._lock:
            self._nodes[node["metadata"]["name"]] = copy.deepcopy(node)

    # -- faults

    def set_forbidden(self, kind: str, on: bool = True) -> None:
        """``kind`` is ``pods`` or ``nodes``: answer 403 Forbidden as RBAC would."""
        if kind not in ("pods", "nodes"):
            raise ValueError(f"unknown kind {kind!r} (pods or nodes)")
        with self._lock:
            (self._forbidden.add if on else self._forbidden.discard)(kind)

    def set_garbage(self, on: bool = True) -> None:
        """Answer every request with 200 and an HTML body (a misrouted proxy)."""
        with self._lock:
            self._garbage = on

    # -- what happened

    def pod_requests(self) -> list[KubeRequest]:
        return [r for r in list(self.requests) if "/pods/" in r.path]

    def issue_client_cert(self, user: str) -> tuple[bytes, bytes]:
        """``(certificate PEM, key PEM)`` for ``user``, signed by this double's CA."""
        # The API server takes the user from the certificate's common name.
        cert = self._ca.issue_cert(f"{user}.client.invalid", common_name=user)
        return cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes()

    # -- client configuration

    def write_kubeconfig(self, path: str | Path, *, token: str | None = None) -> Path:
        """Write a kubeconfig (server, certificate-authority, token) at ``path``; return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "double",
            "clusters": [
                {
                    "name": "double-cluster",
                    "cluster": {"server": self.url, "certificate-authority": self.ca_pem_path},
                }
            ],
            "users": [{"name": "hook", "user": {"token": token or self.token}}],
            "contexts": [
                {"name": "double", "context": {"cluster": "double-cluster", "user": "hook"}}
            ],
        }
        # JSON is YAML, so any kubeconfig reader takes it.
        path.write_text(json.dumps(config, indent=2))
        return path

    def service_account_dir(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write ``token``, ``ca.crt`` and ``namespace`` as the kubelet mounts them; return it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "token").write_text(self.token)
        shutil.copyfile(self.ca_pem_path, path / "ca.crt")
        (path / "namespace").write_text(namespace)
        return path

    def kubeconfig_env(self, directory: str | Path) -> dict[str, str]:
        """``{"KUBECONFIG": ...}`` for a kubeconfig written into ``directory``."""
        return {"KUBECONFIG": str(self.write_kubeconfig(Path(directory) / "kubeconfig"))}

    def in_cluster_env(self, directory: str | Path) -> dict[str, str]:
        """The variables of a pod's container, with the service account in ``directory``."""
        account = self.service_account_dir(directory)
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.port),
            "KUBERNETES_SERVICE_ACCOUNT_DIR": str(account),
        }

    # -- answering

    def _answer(
        self, method: str, path: str, headers: dict[str, str], client_cn: str | None
    ) -> tuple[int, bytes, str]:
        self.requests.append(KubeRequest(time.monotonic(), method, path, headers, client_cn))
        with self._lock:
            if self._garbage:
                return 200, GARBAGE, "text/html"
            bearer = headers.get("authorization") == f"Bearer {self.token}"
            if not bearer and client_cn is None:
                return _json(401, status(401, "Unauthorized", "Unauthorized"))
            if method != "GET":
                return _json(
                    405, status(405, "MethodNotAllowed", "the server does not allow this method")
                )
            parts = path.strip("/").split("/")
            if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                return self._pod(parts[3], parts[5])
            if len(parts) == 4 and parts[:3] == ["api", "v1", "nodes"]:
                return self._node(parts[3])
            return _json(
                404, status(404, "NotFound", "the server could not find the requested resource")
            )

    def _pod(self, namespace: str, name: str) -> tuple[int, bytes, str]:
        if "pods" in self._forbidden:
            return _json(
                403,
                status(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: User "{SERVICE_ACCOUNT}" cannot get resource '
                    f'"pods" in API group "" in the namespace "{namespace}"',
                    name=name,
                    kind="pods",
                ),
            )
        pod = self._pods.get((namespace, name))
        if pod is None:
            return _json(
                404, status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
            )
        return _json(200, pod.view())

    def _node(self, name: str) -> tuple[int, bytes, str]:
        if "nodes" in self._forbidden:
            return _json(
                403,
                status(
                    403,
                    "Forbidden",
                    f'nodes "{name}" is forbidden: User "{SERVICE_ACCOUNT}" cannot get resource '
                    '"nodes" in API group "" at the cluster scope',
                    name=name,
                    kind="nodes",
                ),
            )
        node = self._nodes.get(name)
        if node is None:
            return _json(
                404, status(404, "NotFound", f'nodes "{name}" not found', name=name, kind="nodes")
            )
        return _json(200, node)


def _json(code: int, body: dict[str, Any]) -> tuple[int, bytes, str]:
    return code, json.dumps(body).encode(), "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: KubeDouble

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that reject our certificate (a test of exactly that) end the handshake
        # abruptly; that is expected, not worth a stack trace in the test output.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = unquote(urlsplit(self.path).path)
        code, body, content_type = self.server.double._answer(
            self.command, path, headers, self._client_cn()
        )
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _client_cn(self) -> str | None:
        peer = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return value
        return None

    def log_message(self, format: str, *args: Any) -> None:
        pass
