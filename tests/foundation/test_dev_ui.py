"""`make dev` really serves the Dagster UI with the code location loaded, and
`dagster definitions validate` passes. Both run the real commands as subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest

from resources.warehouse import stop_embedded_server

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

LOCATIONS_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation { repositories { name } }
        }
      }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(proc: subprocess.Popen) -> None:
    """Stop `dagster dev` and everything it started (webserver, daemon, code server, runs)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers that outlived their parent
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_dev_serves_the_ui_with_the_code_location_loaded_and_definitions_validate(tmp_path):
    # A home of its own: the daemon starts sensors and schedules that are on by default, and
    # they must not act on the tables other tests share. (Not under tmp_path: pytest may reset
    # its root to 0700, locking out the embedded server's own system user.)
    home = Path(tempfile.mkdtemp(prefix="sf-dev-ui-"))
    port = free_port()
    log = (tmp_path / "dev.log").open("w+")
    proc = subprocess.Popen(
        [str(VENV_BIN / "supportflow"), "dev", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "SUPPORTFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped as a whole below
    )
    # `dagster definitions validate` runs meanwhile: both mostly wait on imports
    validate = subprocess.Popen(
        [str(VENV_BIN / "dagster"), "definitions", "validate", "-m", "orchestration.definitions"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    entries = None
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"supportflow dev exited: {_tail(log)}"
            try:
                response = httpx.post(
                    f"{base}/graphql", json={"query": LOCATIONS_QUERY}, timeout=10
                )
            except httpx.HTTPError:
                time.sleep(1)
                continue
            if response.status_code == 200:
                workspace = response.json()["data"]["workspaceOrError"]
                entries = workspace.get("locationEntries") or []
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            time.sleep(1)
        assert entries, f"the UI never answered on {base}: {_tail(log)}"
        by_name = {e["name"]: e for e in entries}
        assert "orchestration.definitions" in by_name, by_name
        location = by_name["orchestration.definitions"]
        assert location["loadStatus"] == "LOADED"
        loaded = location["locationOrLoadError"]
        assert loaded["__typename"] == "RepositoryLocation", loaded.get("message")
        assert loaded["repositories"]
        assert httpx.get(f"{base}/server_info", timeout=10).status_code == 200
        validated, _ = validate.communicate(timeout=180)
        assert validate.returncode == 0, validated[-3000:]

        # SIGTERM to `supportflow dev` alone (what `timeout` or a process manager sends) stops
        # the webserver, the daemon and the code servers they started, within seconds
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 2, tree
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        _, alive = psutil.wait_procs(tree, timeout=20)
        assert not alive, [p.cmdline() for p in alive]
        output = _tail(log)
        for noise in ("BetaWarning", "PreviewWarning", "DeprecationWarning", "superseded"):
            assert noise not in output, output
    finally:
        stop_group(proc)
        log.close()
        if validate.poll() is None:
            validate.kill()
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]
