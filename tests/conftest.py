"""Test fixtures: one embedded PostgreSQL per test session under a temporary SUPPORTFLOW_HOME.

The environment is set before any supportflow module reads it, so the code location, the CLI
and the resources all talk to the same throwaway server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="sf-test-"))
os.environ["SUPPORTFLOW_HOME"] = str(_HOME)
os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)
os.environ.pop("SUPPORTFLOW_QUEUE_BACKEND", None)
os.environ["DAGSTER_HOME"] = str(_HOME / "dagster")
# The tests write data on fixed days from 2024 on: every daily partition set starts there.
os.environ["SUPPORTFLOW_PARTITIONS_START"] = "2024-01-01"
(_HOME / "dagster").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def sf_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def settings(sf_home):
    from resources.settings import Settings

    return Settings.from_env()


@pytest.fixture(scope="session")
def db_url(settings) -> str:
    from resources.runtime import warehouse_url

    return warehouse_url(settings)


@pytest.fixture
def db(db_url):
    """An autocommit connection to the test warehouse."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def resources(settings, db_url) -> dict:
    from resources.runtime import build_resources

    return build_resources(settings, for_dagster=False)


@pytest.fixture
def pg_queues(resources, db):
    """The postgres queue backend over empty queue tables."""
    db.execute("truncate control.queue_messages, control.queue_dead_letters, control.queue_acks")
    return resources["queues"]


def pytest_sessionfinish(session, exitstatus):
    from resources.warehouse import close_pools, stop_embedded_server

    close_pools()
    try:
        stop_embedded_server(_HOME)
    finally:
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto's server (S3, SNS, SQS) on a free loopback port, for AWS-mode tests with small data
    (moto's SQS slows down as a queue grows: never a benchmark)."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
