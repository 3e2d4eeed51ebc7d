"""Reading this pod and its node from the Kubernetes API.

How the API is reached (:func:`access_from_env`):

* **In the cluster** when ``KUBERNETES_SERVICE_HOST`` and ``KUBERNETES_SERVICE_PORT``
  are set and the service-account token exists. The token is read again for
  every request (the kubelet rotates it); ``ca.crt`` verifies the server. The
  directory is ``/var/run/secrets/kubernetes.io/serviceaccount`` unless
  ``KUBERNETES_SERVICE_ACCOUNT_DIR`` points elsewhere (tests, unusual mounts).
* **Otherwise from a kubeconfig**: the ``:``-separated ``KUBECONFIG`` list (the
  first file setting a key wins) or ``~/.kube/config``, current context.
  Supported: ``server``, ``certificate-authority(-data)``, ``token``,
  ``tokenFile``, ``client-certificate(-data)`` + ``client-key(-data)``.

TLS is always verified. Every failure is a one-line :class:`KubeAPIError`
(``Kubernetes API: pods "web-1" not found (NotFound)``); its ``transient`` flag
says whether trying again can help. This is the only module of the hook that
imports ``requests`` (and ``yaml``).
"""

from __future__ import annotations

import atexit
import base64
import binascii
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests

from hooks.errors import ConfigError, SourceError
from hooks.net import read_secret

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 10.0


class KubeAPIError(SourceError):
    """The API could not answer the request. ``status``/``reason`` come from its Status object."""

    def __init__(
        self, message: str, *, status: int | None = None, reason: str = "", transient: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        #: a refused connection, a timeout or a 5xx: asking again may work
        self.transient = transient


@dataclass(frozen=True)
class Access:
    """Where the API is and how to authenticate; built by :func:`access_from_env`."""

    server: str
    #: CA bundle to verify the server with; ``None`` uses the system's trust store
    ca_file: str | None = None
    token: str | None = field(default=None, repr=False)
    #: read for every request, so a rotated token is picked up
    token_file: str | None = None
    client_cert: tuple[str, str] | None = None
    #: for messages: "in-cluster service account" or "kubeconfig <path> (context <name>)"
    source: str = ""


# -- finding the API ---------------------------------------------------------------------------


def access_from_env(env: Mapping[str, str]) -> Access:
    """In-cluster access when available, else the kubeconfig; :class:`ConfigError` if neither."""
    return in_cluster_access(env) or kubeconfig_access(env)


def in_cluster_access(env: Mapping[str, str]) -> Access | None:
    """Access through the pod's service account, or ``None`` when not in a cluster."""
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "").strip()
    directory = Path(env.get("KUBERNETES_SERVICE_ACCOUNT_DIR") or SERVICE_ACCOUNT_DIR)
    token = directory / "token"
    if not (host and port and token.is_file()):
        return None
    if ":" in host:
        host = f"[{host}]"
    ca = directory / "ca.crt"
    return Access(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.is_file() else None,
        token_file=str(token),
        source="in-cluster service account",
    )


def kubeconfig_access(env: Mapping[str, str]) -> Access:
    """Access as the kubeconfig's current context describes it."""
    paths = _kubeconfig_paths(env)
    existing = [p for p in paths if p.is_file()]
    if not existing:
        raise ConfigError(
            "no access to the Kubernetes API: not in a cluster (KUBERNETES_SERVICE_HOST/"
            "KUBERNETES_SERVICE_PORT unset or no service-account token) and no kubeconfig at "
            + ":".join(str(p) for p in paths)
            + " (set KUBECONFIG)"
        )
    merged = _merge_kubeconfigs(existing)
    context_name = merged.current_context
    where = ":".join(str(p) for p in existing)
    if not context_name:
        raise ConfigError(f"kubeconfig {where}: no current-context is set")
    context, _ = merged.entry("contexts", context_name, where)
    cluster, cluster_dir = merged.entry("clusters", context.get("cluster"), where)
    user, user_dir = (
        merged.entry("users", context["user"], where) if context.get("user") else ({}, Path())
    )
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise ConfigError(f"kubeconfig {where}: cluster {context.get('cluster')!r} has no server")
    if cluster.get("insecure-skip-tls-verify"):
        log.warning("kubeconfig asks to skip TLS verification; this hook verifies anyway")
    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported):
            raise ConfigError(
                f"kubeconfig {where}: user {context['user']!r} authenticates with "
                f"{unsupported}, which this hook does not support (use token or tokenFile)"
            )
    return Access(
        server=server,
        ca_file=_file_or_data(cluster, "certificate-authority", cluster_dir, where),
        token=str(user["token"]).strip() if user.get("token") else None,
        token_file=_resolve(user["tokenFile"], user_dir) if user.get("tokenFile") else None,
        client_cert=_client_cert(user, user_dir, where),
        source=f"kubeconfig {where} (context {context_name})",
    )


def _kubeconfig_paths(env: Mapping[str, str]) -> list[Path]:
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p.strip()]
    if listed:
        return [Path(p).expanduser() for p in listed]
    home = env.get("HOME") or str(Path.home())
    return [Path(home) / ".kube" / "config"]


@dataclass
class _Merged:
    current_context: str | None
    # section -> name -> (body, directory of the file that defined it)
    sections: dict[str, dict[str, tuple[dict, Path]]]

    def entry(self, section: str, name: object, where: str) -> tuple[dict, Path]:
        found = self.sections[section].get(str(name)) if name else None
        if found is None:
            kind = section[:-1]
            raise ConfigError(f"kubeconfig {where}: no {kind} named {name!r}")
        return found


_SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}


def _merge_kubeconfigs(paths: list[Path]) -> _Merged:
    import yaml

    merged = _Merged(None, {section: {} for section in _SECTIONS})
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"kubeconfig {path} is not valid YAML{at}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"kubeconfig {path} is not a kubeconfig (expected a mapping)")
        # For every key the first file that sets it wins, as kubectl merges KUBECONFIG.
        merged.current_context = merged.current_context or document.get("current-context")
        for section, body_key in _SECTIONS.items():
            for item in document.get(section) or []:
                if isinstance(item, dict) and item.get("name"):
                    body = item.get(body_key) if isinstance(item.get(body_key), dict) else {}
                    merged.sections[section].setdefault(str(item["name"]), (body, path.parent))
    return merged


def _resolve(path: object, base: Path) -> str:
    # Relative paths in a kubeconfig are relative to that file's directory.
    return str(base / Path(str(path)).expanduser())


def _file_or_data(body: Mapping, key: str, base: Path, where: str) -> str | None:
    if body.get(key):
        return _resolve(body[key], base)
    data = body.get(f"{key}-data")
    if not data:
        return None
    try:
        pem = base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"kubeconfig {where}: {key}-data is not valid base64") from None
    return _private_file(key, pem)


def _client_cert(user: Mapping, base: Path, where: str) -> tuple[str, str] | None:
    cert = _file_or_data(user, "client-certificate", base, where)
    key = _file_or_data(user, "client-key", base, where)
    if bool(cert) != bool(key):
        raise ConfigError(
            f"kubeconfig {where}: client-certificate and client-key must be given together"
        )
    return (cert, key) if cert and key else None


_private_dir: str | None = None


def _private_file(name: str, content: bytes) -> str:
    """Write ``content`` where only this user can read it; removed when the process exits.

    requests takes certificates and keys only as files, and a key must not be
    left readable by others.
    """
    global _private_dir
    if _private_dir is None:
        _private_dir = tempfile.mkdtemp(prefix="consul-hook-kube-")  # mode 0700
        atexit.register(shutil.rmtree, _private_dir, True)
    path = os.path.join(_private_dir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    return path


# -- talking to it -----------------------------------------------------------------------------


class KubeAPI:
    """GETs pods and nodes. Every error is a :class:`KubeAPIError` with a one-line message."""

    def __init__(self, access: Access) -> None:
        self.access = access
        self._session = requests.Session()
        self._session.headers["Accept"] = "application/json"
        self._session.headers["User-Agent"] = "consul-registration-hook"
        self._session.verify = access.ca_file or True
        self._session.cert = access.client_cert
        # Proxy variables and REQUESTS_CA_BUNDLE must not redirect the token or the CA.
        self._session.trust_env = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KubeAPI:
        """A client as :func:`access_from_env` finds the API."""
        access = access_from_env(env)
        log.debug("Kubernetes API at %s via %s", access.server, access.source)
        return cls(access)

    def close(self) -> None:
        self._session.close()

    def get_pod(self, namespace: str, name: str, *, timeout: float = READ_TIMEOUT) -> dict:
        """The Pod object ``namespace/name``."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
        return self._get(path, timeout)

    def get_node(self, name: str, *, timeout: float = READ_TIMEOUT) -> dict:
        """The Node object ``name``."""
        return self._get(f"/api/v1/nodes/{quote(name, safe='')}", timeout)

    def _get(self, path: str, timeout: float) -> dict:
        headers = {}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = max(timeout, 0.1)
        try:
            response = self._session.get(
                self.access.server + path,
                headers=headers,
                timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise KubeAPIError(
                f"Kubernetes API at {self.access.server}: TLS handshake failed: "
                f"{_tls_reason(exc)} (CA: {self.access.ca_file or 'system trust store'})"
            ) from None
        except requests.RequestException as exc:
            raise KubeAPIError(
                f"Kubernetes API at {self.access.server} unreachable ({_reason(exc)})",
                transient=True,
            ) from None
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                kind = response.headers.get("Content-Type") or "no content type"
                raise KubeAPIError(
                    f"Kubernetes API: GET {path} answered 200 with a body that is not a JSON "
                    f"object ({kind}); is {self.access.server} really the API server?"
                )
            return body
        raise _status_error(response, path)

    def _token(self) -> str | None:
        # As in client-go, an inline token wins over tokenFile.
        if self.access.token:
            return self.access.token
        if self.access.token_file:
            return read_secret(self.access.token_file, "the Kubernetes token") or None
        return None


def _status_error(response: requests.Response, path: str) -> KubeAPIError:
    code = response.status_code
    transient = code >= 500 or code == 429
    try:
        status = response.json()
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("message"):
        message = " ".join(str(status["message"]).split())
        reason = str(status.get("reason") or code)
        return KubeAPIError(
            f"Kubernetes API: {message} ({reason})", status=code, reason=reason, transient=transient
        )
    return KubeAPIError(
        f"Kubernetes API: GET {path} answered HTTP {code}", status=code, transient=transient
    )


def _reason(exc: requests.RequestException) -> str:
    text = str(exc)
    if isinstance(exc, requests.Timeout) or "timed out" in text:
        return "timed out"
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "name not resolved"),
        ("nodename nor servname", "name not resolved"),
        ("Temporary failure in name resolution", "name not resolved"),
        ("No route to host", "no route to host"),
        ("RemoteDisconnected", "connection closed without an answer"),
        ("Connection reset", "connection reset"),
    ):
        if marker in text:
            return reason
    return type(exc).__name__


def _tls_reason(exc: requests.RequestException) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "certificate verify failed"
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return "the server does not speak TLS"
    return "SSL error"
