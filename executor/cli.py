"""``consul-mesos-executor``: started by the Mesos agent for one Marathon task.

The agent runs ``chmod ug+rx '<path>' && exec '<path>' <app cmd>``, so the
arguments are the app's command, which the executor reads from the TaskInfo
instead; only a lone ``--version`` or ``--help`` is answered. Configuration comes
from the environment (see :mod:`executor.config`); a bad value ends the executor
with one line and status 2 before it subscribes to the agent.

Exit status: 0 when every terminal update was acknowledged, 1 otherwise (or when
the connection to the agent failed for good), 2 for a configuration error.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hooks import __version__

if TYPE_CHECKING:
    from executor.config import ExecutorConfig
    from executor.driver import ExecutorDriver
    from executor.supervisor import Supervisor

PROG = "consul-mesos-executor"
USAGE = f"""usage: {PROG} [--version | --help]

A Mesos custom executor for Marathon apps: runs the task, registers it in Consul
before reporting it running, and deregisters it (then waits a propagation delay)
before stopping it. Started by the Mesos agent; configured by the environment:
EXECUTOR_PROPAGATION_DELAY, EXECUTOR_KILL_GRACE_PERIOD, EXECUTOR_CONSUL_GLOBAL_TAG,
EXECUTOR_DEREGISTER_CRITICAL_SERVICE_AFTER, EXECUTOR_ADVERTISE_IP, EXECUTOR_LOG_LEVEL,
EXECUTOR_LOG_FORMAT, EXECUTOR_CONFIG (a YAML file of the same settings), CONSUL_*.
"""

log = logging.getLogger(PROG)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        print(f"{PROG} {__version__}")
        return 0
    if args in (["--help"], ["-h"]):
        print(USAGE, end="")
        return 0

    from executor.config import AUTH_TOKEN_VAR, ExecutorConfig
    from hooks.errors import ConfigError

    try:
        config = ExecutorConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    # Like libmesos: the token is the executor's alone; nothing it starts inherits it.
    os.environ.pop(AUTH_TOKEN_VAR, None)
    return run(config)


def run(config: ExecutorConfig) -> int:
    """Subscribe, serve the task until it is over, and return the exit status."""
    # pymesos is imported before logging is set up: its import adds a handler of its own.
    from executor.driver import ExecutorDriver
    from executor.executor import ConsulExecutor
    from executor.lifecycle import Context
    from executor.supervisor import Supervisor
    from executor.task import GROUPS
    from hooks import log as logsetup
    from hooks.consul.client import ConsulClient

    logsetup.setup(config.log_level, config.log_format)
    # Its connect-retry warnings say "sleep 0s": our driver logs the real back-off.
    logging.getLogger("pymesos.process").setLevel(logging.ERROR)
    log.info("%s %s starting", PROG, __version__, extra={"fields": config.describe()})

    # The Consul client (and requests) load now, so LAUNCH → TASK_RUNNING does not pay for it.
    supervisor = Supervisor(Context(config, ConsulClient(config.consul), dict(os.environ)))
    driver = ExecutorDriver(ConsulExecutor(supervisor), config.agent)
    supervisor.bind(driver)
    _handle_signals(supervisor, driver)

    driver.start()
    try:
        code = supervisor.wait()
    finally:
        driver.stop()
        driver.join(1.0)
        # Whatever way we got here, no process of the task outlives the executor.
        leftovers = GROUPS.kill_all()
        if leftovers:
            log.warning("SIGKILL sent to leftover process group(s) %s", leftovers)
    if driver.failed:
        code = code or 1
    log.info("executor exiting with status %s", code)
    return code if code is not None else 1


def _handle_signals(supervisor: Supervisor, driver: ExecutorDriver) -> None:
    """SIGTERM and SIGINT stop the task gracefully, then the executor exits.

    pymesos also reports the death of its I/O thread as a SIGINT to the main thread (the
    driver has already started the shutdown then), and its own SIGINT handler would
    re-raise the I/O thread's exception here: ours replaces it.
    """

    def on_signal(signum, frame) -> None:
        if signum == signal.SIGINT and driver.io_failed:
            return  # pymesos's report of its I/O thread's death; the driver has handled it
        why = f"the executor received {signal.Signals(signum).name}"
        log.info("%s: stopping", why)
        # Not here: the handler runs on the main thread, which may hold the supervisor's
        # lock (in wait()) when the signal arrives; stop_all takes that lock too.
        threading.Thread(
            target=supervisor.stop_all, args=(why,), name="signal-stop", daemon=True
        ).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
