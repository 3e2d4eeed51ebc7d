"""The "real task" for end-to-end executor tests: an HTTP server with a scriptable lifecycle.

    python3 tests/apps/task_app.py --port N [--events FILE] [--ignore-sigterm]
        [--health-path /health] [--unhealthy-after SECONDS]
        [--exit-after SECONDS [--exit-code C]] [--child]

* Serves HTTP on 127.0.0.1:N: GET on the health path answers 200 "ok", or 503 once
  --unhealthy-after seconds have passed; other paths answer 404.
* Appends JSON lines to --events (and prints them to stdout), each written with one
  write() and fsync'ed, so a test can read them even after a SIGKILL:
  {"event": "started", "time": <time.time()>, "pid": <pid>, "pgid": ..., "port": N}
  {"event": "child", ..., "child_pid": <pid>}  (with --child)
  {"event": "sigterm", ...}
  {"event": "exit", ..., "code": C, "reason": "sigterm" | "exit-after"}
* On SIGTERM it logs and exits 0, unless --ignore-sigterm.
* --child starts a process that sleeps forever in the same process group, so a test can
  check that no process of the group survives a kill. The app never stops it itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EventLog:
    """Appends one JSON line per event to a file (if any) and to stdout."""

    def __init__(self, path: str | None) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else None

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": time.time(), "pid": os.getpid(), **fields})
        if self._fd is not None:
            # One O_APPEND write per line, so lines from the timer thread and the signal
            # handler never interleave.
            os.write(self._fd, (line + "\n").encode())
            os.fsync(self._fd)
        # stdout may be a pipe that the executor already closed; the file is what counts.
        with contextlib.suppress(OSError):
            print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", help="file to append JSON event lines to")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--health-path", default="/health")
    parser.add_argument("--unhealthy-after", type=float, metavar="SECONDS")
    parser.add_argument("--exit-after", type=float, metavar="SECONDS")
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--child", action="store_true", help="spawn a child that sleeps forever")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    events = EventLog(args.events)
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != args.health_path:
                self._reply(404, "not found")
            elif args.unhealthy_after is not None and (
                time.monotonic() - started >= args.unhealthy_after
            ):
                self._reply(503, "unhealthy")
            else:
                self._reply(200, "ok")

        def _reply(self, status: int, text: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass  # health checks every few seconds would flood stderr

    def exit_now(code: int, reason: str) -> None:
        events.write("exit", code=code, reason=reason)
        os._exit(code)  # immediate: works from any thread and skips server cleanup

    def on_sigterm(signum: int, frame: object) -> None:
        events.write("sigterm")
        if not args.ignore_sigterm:
            exit_now(0, "sigterm")

    # Before "started" is logged, so a test that saw "started" knows SIGTERM is handled.
    signal.signal(signal.SIGTERM, on_sigterm)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    events.write("started", pgid=os.getpgid(0), port=args.port)
    if args.child:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time\nwhile True:\n    time.sleep(3600)"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        events.write("child", child_pid=child.pid)
    if args.exit_after is not None:
        timer = threading.Timer(args.exit_after, exit_now, (args.exit_code, "exit-after"))
        timer.daemon = True
        timer.start()
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
