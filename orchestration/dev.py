"""`supportflow dev`: the Dagster webserver and daemon on the supportflow code location, as one
command that a terminal's Ctrl-C, a process manager's SIGTERM or `timeout` stops whole.

The two processes run in sessions of their own, so a signal meant for them comes only from here:
on SIGINT, SIGTERM or SIGHUP both get SIGTERM (each stops its code servers and runs), and after a
grace period whatever is left of their process groups gets SIGKILL. If either dies, the other is
stopped too, so no half of the UI is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_SECONDS = 10.0
CODE_LOCATION_MODULE = "orchestration.definitions"


def dev_commands(host: str, port: int) -> list[list[str]]:
    """The webserver and the daemon, from the interpreter's own environment."""
    bin_dir = Path(sys.executable).parent
    return [
        [
            str(bin_dir / "dagster-webserver"),
            "-m",
            CODE_LOCATION_MODULE,
            "-h",
            host,
            "-p",
            str(port),
        ],
        [str(bin_dir / "dagster-daemon"), "run", "-m", CODE_LOCATION_MODULE],
    ]


def _signal_groups(processes: list[subprocess.Popen], sig: int) -> None:
    for process in processes:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


def supervise(commands: list[list[str]], env: dict[str, str]) -> int:
    """Run `commands` until one exits or this process is asked to stop; then stop them all.
    Returns 0 when asked to stop, else the exit code of the process that ended first."""
    stop = {"signal": 0}

    def request_stop(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, request_stop)
    processes = [subprocess.Popen(cmd, env=env, start_new_session=True) for cmd in commands]
    ended = None
    try:
        while not stop["signal"] and ended is None:
            ended = next((p for p in processes if p.poll() is not None), None)
            time.sleep(0.2)
    finally:
        _signal_groups(processes, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _signal_groups(processes, signal.SIGKILL)  # stragglers: code servers, run workers
        for process in processes:
            process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stop["signal"] or ended is None else (ended.returncode or 1)
