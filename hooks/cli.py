"""``consul-registration-hook``: the command line of the original Go tool.

    consul-registration-hook [--consul-acl-file PATH] register   {k8s|mesos|cli} [flags]
    consul-registration-hook [--consul-acl-file PATH] deregister {k8s|mesos|cli} [flags]

Only argparse loads until a command actually runs, so ``--help`` and
``--version`` stay fast; each mode imports its own code when chosen. Every flag
also reads the environment variable named in its help, as the original did.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from hooks import __version__
from hooks.errors import ConfigError, HookError
from hooks.settings import duration

PROG = "consul-registration-hook"


class _EnvDefault(argparse.Action):
    """A flag whose default comes from an environment variable (shown in --help)."""

    def __init__(self, option_strings, dest, env=None, default=None, help=None, **kw):
        self.env = env
        if env and os.environ.get(env):
            default = os.environ[env]
        if env:
            help = f"{help} (env {env}" + (f", default {default})" if default else ")")
        super().__init__(option_strings, dest, default=default, help=help, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


def _flag(parser, name: str, env: str | None, help: str, default=None) -> None:
    parser.add_argument(name, action=_EnvDefault, env=env, default=default, help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Synchronous registration and deregistration of services in Consul "
        "for Kubernetes pods (lifecycle hooks) and Mesos tasks.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--consul-acl-file", metavar="PATH", help="file holding the Consul ACL token"
    )
    _flag(
        parser,
        "--catalog-wait",
        "CONSUL_CATALOG_WAIT",
        "wait until the Consul catalog shows the change, at most this long (0 disables)",
        "10s",
    )
    _flag(parser, "--log-level", "HOOK_LOG_LEVEL", "debug, info, warning or error", "info")
    _flag(parser, "--log-format", "HOOK_LOG_FORMAT", "text or json", "text")
    actions = parser.add_subparsers(dest="action", metavar="{register,deregister}", required=True)
    for action in ("register", "deregister"):
        sub = actions.add_parser(
            action,
            help=f"{action} services in Consul",
            description=f"{action.capitalize()} services in Consul.",
        )
        modes = sub.add_subparsers(dest="mode", metavar="{k8s,mesos,cli}", required=True)
        _k8s_flags(
            modes.add_parser("k8s", help="services of this pod, from the Kubernetes API"), action
        )
        _mesos_flags(modes.add_parser("mesos", help="services of this task, from the Mesos agent"))
        _cli_flags(modes.add_parser("cli", help="one service described by flags"), action)
    return parser


def _k8s_flags(parser, action: str) -> None:
    _flag(
        parser,
        "--get-pod-timeout",
        "KUBERNETES_GET_POD_TIMEOUT",
        "how long to wait for the pod (and its IP) from the API",
        "10s",
    )
    if action == "register":
        _flag(
            parser,
            "--health-check-timeout",
            "KUBERNETES_HEALTH_CHECK_TIMEOUT",
            "how long to wait for the container's probe to pass (0: do not wait)",
            "300s",
        )
    _flag(
        parser,
        "--state-dir",
        "CONSUL_HOOK_STATE_DIR",
        "where register records the ids deregister falls back to "
        "(default: <tmp>/consul-registration-hook)",
    )


def _mesos_flags(parser) -> None:
    endpoint = os.environ.get("MESOS_AGENT_ENDPOINT")
    _flag(
        parser,
        "--agent-url",
        None,
        "Mesos agent base URL (default http://$MESOS_AGENT_ENDPOINT, else http://127.0.0.1:5051)",
        f"http://{endpoint}" if endpoint else "http://127.0.0.1:5051",
    )


def _cli_flags(parser, action: str) -> None:
    if action == "register":
        _flag(parser, "--service-name", "KUBERNETES_SERVICE_NAME", "service name")
        _flag(parser, "--pod-ip", "KUBERNETES_POD_IP", "address to register")
        _flag(parser, "--container-port", "KUBERNETES_CONTAINER_PORT", "port to register")
        _flag(parser, "--service-tags", "KUBERNETES_SERVICE_TAGS", "comma-separated tags", "")
        _flag(parser, "--check-path", "KUBERNETES_CHECK_PATH", "HTTP check path", "")
    else:
        _flag(parser, "--service-id", "KUBERNETES_SERVICE_ID", "service id to deregister")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from hooks.consul.config import ConsulConfig

    consul = ConsulConfig.from_env(env, token_file=args.consul_acl_file).with_(
        catalog_wait=duration("--catalog-wait", args.catalog_wait)
    )
    if args.mode == "k8s":
        from hooks.k8s import hook

        timeout = duration("--get-pod-timeout", args.get_pod_timeout)
        if args.action == "register":
            probe_timeout = duration("--health-check-timeout", args.health_check_timeout)
            return hook.register(
                consul,
                env,
                get_pod_timeout=timeout,
                health_check_timeout=probe_timeout,
                state_dir=args.state_dir,
            )
        return hook.deregister(consul, env, get_pod_timeout=timeout, state_dir=args.state_dir)
    if args.mode == "mesos":
        from hooks.mesos import hook

        return getattr(hook, args.action)(consul, env, agent_url=args.agent_url)
    from hooks import manual

    if args.action == "register":
        return manual.register(
            consul,
            name=args.service_name,
            address=args.pod_ip,
            port=args.container_port,
            tags=args.service_tags,
            check_path=args.check_path,
        )
    return manual.deregister(consul, service_id=args.service_id)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:
        # Answered before the parser is built: probes and scripts call this a lot.
        print(f"{PROG} {__version__}")
        return 0
    args = build_parser().parse_args(argv)
    from hooks import log

    if args.log_format not in ("text", "json"):
        print(f"{PROG}: error: --log-format: must be text or json", file=sys.stderr)
        return 2
    try:
        log.setup(args.log_level, args.log_format)
    except ValueError:
        print(f"{PROG}: error: --log-level: unknown level {args.log_level!r}", file=sys.stderr)
        return 2
    try:
        return run(args, os.environ)
    except ConfigError as exc:
        return _fail(exc, 2)
    except HookError as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _fail(error, code: int) -> int:
    # One line for the user; the traceback only when asked for with debug logging.
    import logging

    logging.getLogger(PROG).debug("failure details", exc_info=isinstance(error, Exception))
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return code
