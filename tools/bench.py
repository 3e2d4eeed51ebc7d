"""``make bench``: the figures that multiply by every task on a host, beside their baselines.

Each figure is a median over several runs, printed next to a bare baseline measured in the
same run (these machines are noisy: compare ratios, not absolute numbers):

* idle executor RSS (task running and registered) vs. a bare ``import pymesos, requests``;
* RSS growth of an executor running 1-second HTTP health checks over ``--soak`` seconds;
* ``consul-registration-hook --version`` and the single-file build's (``make bench`` builds it)
  vs. ``python -c pass``;
* KILL → deregistration at Consul; deregistration → SIGTERM minus the propagation delay;
* LAUNCH → ``TASK_RUNNING`` for a task without a health check;
* ``register k8s`` end to end against the local doubles (probe already passing).

Usage: python tools/bench.py [--runs N] [--soak SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scenario import BIN, ROOT, TASK_APP, free_port, hook_env, ready_server, sample_pod

from tests.doubles.consul import ConsulDouble
from tests.doubles.kube import KubeDouble
from tests.doubles.mesos_agent import MesosAgentDouble, marathon_task_info

PROPAGATION_DELAY = 1.0


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def wall(argv: list[str], runs: int, env: dict | None = None) -> float:
    """Median wall-clock seconds of running ``argv`` to completion."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def baseline_rss(runs: int) -> float:
    """RSS of a bare interpreter that only imports pymesos and requests, then idles."""
    code = "import pymesos, requests, sys; print('ready', flush=True); sys.stdin.read()"
    samples = []
    for _ in range(runs):
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()
        time.sleep(0.5)
        samples.append(rss_mb(proc.pid))
        proc.stdin.close()
        proc.wait()
    return statistics.median(samples)


def marathon_app(port_name: str = "http", health: bool = False) -> dict:
    app = {
        "id": "/bench/app",
        "cmd": f"{sys.executable} {TASK_APP} --port $PORT0 --events $MESOS_SANDBOX/events",
        "labels": {"consul": "bench"},
        "portDefinitions": [{"port": 0, "name": port_name}],
        "env": {
            "EXECUTOR_PROPAGATION_DELAY": f"{PROPAGATION_DELAY}s",
            "EXECUTOR_KILL_GRACE_PERIOD": "2s",
        },
    }
    if health:
        app["healthChecks"] = [
            {
                "protocol": "MESOS_HTTP",
                "path": "/health",
                "portIndex": 0,
                "intervalSeconds": 1,
                "timeoutSeconds": 1,
                "delaySeconds": 0,
                "gracePeriodSeconds": 5,
                "maxConsecutiveFailures": 3,
            }
        ]
    return app


def task_event(sandbox: Path, name: str) -> float | None:
    """``time.time()`` of the task's first ``name`` event, if it happened."""
    path = sandbox / "events"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == name:
            return event["time"]
    return None


def executor_run(workdir: Path, soak: float = 0.0) -> dict:
    """One task through the real executor: launch, idle, (soak), kill. Returns its timings."""
    executor = str(BIN / "consul-mesos-executor")
    # monotonic (the doubles) and wall (the task's events) clocks, tied together once
    offset = time.time() - time.monotonic()
    with ConsulDouble() as consul, MesosAgentDouble() as agent:
        sandbox = workdir / f"sandbox-{time.monotonic_ns()}"
        sandbox.mkdir()
        task = marathon_task_info(
            marathon_app(health=soak > 0), executor_path=executor, ports=[free_port()]
        )
        extra = {
            "CONSUL_HTTP_ADDR": consul.addr,
            "EXECUTOR_ADVERTISE_IP": "127.0.0.1",
            "CONSUL_CATALOG_WAIT": "0",
        }
        proc = agent.launch_executor(executor, task, sandbox=str(sandbox), extra_env=extra)
        try:
            running = agent.wait_for_update(
                "TASK_RUNNING", healthy=True if soak else None, timeout=20
            )
            subscribed = next(r.time for r in agent.requests if r.type == "SUBSCRIBE")
            result = {"launch_to_running": running.time - subscribed}
            time.sleep(1.0)  # let start-up garbage settle before reading the idle size
            result["idle_rss"] = rss_mb(proc.pid)
            if soak:
                deadline = time.monotonic() + soak
                while time.monotonic() < deadline:
                    time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
                result["soak_growth"] = rss_mb(proc.pid) - result["idle_rss"]
            killed = time.monotonic()
            agent.kill(proc.task_id)
            agent.wait_for_update("TASK_KILLED", timeout=20)
            dereg = next(t for t, _ in consul.deregistrations())
            sigterm = task_event(sandbox, "sigterm")
            result["kill_to_dereg"] = dereg - killed
            if sigterm is not None:
                result["dereg_to_sigterm"] = (sigterm - offset) - dereg - PROPAGATION_DELAY
            proc.wait_exit(20)
            return result
        finally:
            proc.kill_group()


def register_k8s_run(workdir: Path, runs: int) -> float:
    with ready_server() as port, ConsulDouble() as consul, KubeDouble() as kube:
        kube.add_pod(sample_pod(port))
        kube.add_node({"metadata": {"name": "node-1", "labels": {}}})
        hook = str(BIN / "consul-registration-hook")
        return wall([hook, "register", "k8s"], runs, hook_env(workdir, consul.addr, kube))


def row(name: str, value: str, baseline: str, ratio: str, target: str) -> str:
    return f"| {name:<44} | {value:>10} | {baseline:>12} | {ratio:>6} | {target:<26} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--soak",
        type=float,
        default=float(os.environ.get("BENCH_SOAK", 60)),
        help="seconds of 1 s health checks for the RSS growth figure",
    )
    args = parser.parse_args()
    runs = args.runs
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bare = wall([sys.executable, "-c", "pass"], runs * 4)
        hook_version = wall([str(BIN / "consul-registration-hook"), "--version"], runs * 4)
        built = ROOT / "dist" / "consul-registration-hook"
        # Run by the same interpreter as the baseline (its shebang could find another python3).
        built_version = (
            wall([sys.executable, str(built), "--version"], runs * 4) if built.exists() else None
        )
        k8s = register_k8s_run(workdir, runs)
        base_rss = baseline_rss(3)
        executor_runs = [executor_run(workdir) for _ in range(runs)]
        soak = executor_run(workdir, soak=args.soak) if args.soak > 0 else None

    def median(key: str) -> float:
        return statistics.median(r[key] for r in executor_runs if key in r)

    idle = median("idle_rss")
    lines = [
        row("figure (median)", "value", "baseline", "ratio", "target"),
        row("-" * 44, "-" * 10, "-" * 12, "-" * 6, "-" * 26),
        row(
            "idle executor RSS",
            f"{idle:.1f} MB",
            f"{base_rss:.1f} MB",
            f"{idle / base_rss:.2f}",
            "<= 28 MB, <= baseline",
        ),
    ]
    if soak:
        lines.append(
            row(
                f"RSS growth over {args.soak:g}s of 1s health checks",
                f"{soak['soak_growth']:+.2f} MB",
                "",
                "",
                "<= 1 MB over 10 min",
            )
        )
    lines += [
        row(
            "consul-registration-hook --version",
            ms(hook_version),
            f"{ms(bare)} *",
            f"{hook_version / bare:.2f}",
            "<= 50 ms",
        ),
    ]
    if built_version is not None:
        lines.append(
            row(
                "dist/consul-registration-hook --version",
                ms(built_version),
                f"{ms(bare)} *",
                f"{built_version / bare:.2f}",
                "(single-file build)",
            )
        )
    lines += [
        row("KILL -> deregistration at Consul", ms(median("kill_to_dereg")), "", "", "<= 20 ms"),
        row(
            "deregistration -> SIGTERM, minus the delay",
            ms(median("dereg_to_sigterm")),
            "",
            "",
            "<= 20 ms",
        ),
        row(
            "LAUNCH -> TASK_RUNNING (no health check)",
            ms(median("launch_to_running")),
            f"{ms(bare)} *",
            f"{median('launch_to_running') / bare:.2f}",
            "<= 300 ms",
        ),
        row(
            "register k8s end to end (probe passing)",
            ms(k8s),
            f"{ms(bare)} *",
            f"{k8s / bare:.2f}",
            "<= 300 ms",
        ),
    ]
    print("\n".join(lines))
    print(
        f"\n* baseline `python -c pass`; RSS baseline: `import pymesos, requests`. "
        f"{runs} runs each ({runs * 4} for start-up), Python {sys.version.split()[0]}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
