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
def embedded_resources(settings, db_url) -> dict:
    """The resources of the embedded default: PostgreSQL queues, local export directory."""
    from resources.runtime import build_resources

    return build_resources(settings, for_dagster=False)


@pytest.fixture
def resources(request, embedded_resources) -> dict:
    """The platform's resources: those of the test's mode when it runs in both (`platform`),
    else the embedded default's."""
    if "platform" in request.fixturenames:
        return request.getfixturevalue("platform").resources
    return embedded_resources


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


@pytest.fixture(scope="session")
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


class Platform:
    """The platform in one of its two shapes, for end-to-end tests that run in both.

    `embedded`: PostgreSQL queues, export files in a local directory, alerts stored only.
    `aws`: SQS queues, export files on S3, alerts also published to SNS, all on moto's server,
    with a queue subscribed to the topic so the test reads back what SNS delivered. The process
    environment holds the mode's variables, so CLI subprocesses and `Settings.from_env()` agree.
    """

    def __init__(self, mode: str, settings, resources: dict, alert_inbox: str = "") -> None:
        self.mode = mode
        self.settings = settings
        self.resources = resources
        self.alert_inbox = alert_inbox  # the SQS queue subscribed to the alert topic (aws)

    def __repr__(self) -> str:
        return f"Platform({self.mode})"

    @property
    def is_aws(self) -> bool:
        return self.mode == "aws"

    def read_export(self, relative_path: str) -> bytes:
        """An export or report file, from wherever this shape keeps them."""
        return self.resources["export_storage"].read_bytes(relative_path)

    def retry_is_due(self, db, queue: str, timeout: float = 60) -> bool:
        """Wait until a failed message's retry is due: True when it is visible again, False
        when nothing waits any more (it was dead-lettered meanwhile).

        On PostgreSQL its visibility moves to now. On SQS, whose delays are whole seconds, a
        drain long-polling for a second may receive a one-second retry again in the same run,
        so the message can reach its receive limit before the test asks: the queue's counts,
        not the number of drains, say which it is.
        """
        import time

        if not self.is_aws:
            moved = db.execute(
                "update control.queue_messages set visible_at = now() where queue = %s", (queue,)
            ).rowcount
            return moved > 0
        deadline = time.monotonic() + timeout
        while True:
            (stats,) = [s for s in self.resources["queues"].stats() if s.queue == queue]
            if stats.visible:
                return True
            if not stats.in_flight and not stats.delayed:
                return False
            assert time.monotonic() < deadline, f"the retried message never came back to {queue}"
            time.sleep(0.2)

    def published_alerts(self, expected: int = 1, wait_seconds: float = 20) -> list[dict]:
        """The alerts SNS delivered to the subscribed queue (aws), waiting for `expected` of
        them at most `wait_seconds`; the embedded shape publishes nothing."""
        import json
        import time

        import boto3

        if not self.is_aws:
            return []
        sqs = boto3.client("sqs", endpoint_url=self.settings.aws_endpoint_url)
        alerts: list[dict] = []
        deadline = time.monotonic() + wait_seconds
        while len(alerts) < expected and time.monotonic() < deadline:
            answer = sqs.receive_message(
                QueueUrl=self.alert_inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in answer.get("Messages", []):
                envelope = json.loads(message["Body"])
                alerts.append({"subject": envelope["Subject"], **json.loads(envelope["Message"])})
                sqs.delete_message(
                    QueueUrl=self.alert_inbox, ReceiptHandle=message["ReceiptHandle"]
                )
        return alerts


@pytest.fixture(params=["embedded", "aws"])
def platform(request, settings, embedded_resources, monkeypatch) -> Platform:
    """Run the requesting test in both shapes of the platform (see `Platform`). Every fixture
    built on `resources` then gets this shape's resources."""
    if request.param == "embedded":
        return Platform("embedded", settings, embedded_resources)
    import uuid

    import boto3

    from resources.runtime import build_resources
    from resources.settings import Settings

    endpoint = request.getfixturevalue("moto_endpoint")
    run = uuid.uuid4().hex[:8]
    environment = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "SUPPORTFLOW_QUEUE_BACKEND": "sqs",
        "SUPPORTFLOW_SQS_PREFIX": f"t{run}-",  # queues of this test only
        "SUPPORTFLOW_SQS_WAIT_SECONDS": "1",  # a drain's last, empty receive waits 1 s, not 10
        "SUPPORTFLOW_EXPORT_URL": f"s3://exports-{run}/supportflow",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=f"exports-{run}")
    sns = boto3.client("sns", endpoint_url=endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    topic = sns.create_topic(Name=f"alerts-{run}")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"alerts-inbox-{run}")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
    monkeypatch.setenv("SUPPORTFLOW_ALERT_SNS_TOPIC_ARN", topic)
    aws_settings = Settings.from_env()
    return Platform("aws", aws_settings, build_resources(aws_settings, for_dagster=False), inbox)
