"""Alerts published to SNS, on moto's SNS (issue 14): an SQS queue subscribed to the topic reads
back what a dead-lettering raised, and a warehouse that is down does not stop the SNS message."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from resources.alerts import AlertsResource
from resources.queues import BatchOutcome, drain
from resources.warehouse import WarehouseResource


@pytest.fixture
def subscribed_topic(moto_endpoint, monkeypatch):
    """A topic with an SQS queue subscribed; returns (topic ARN, read the queue)."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    region = "eu-west-1"
    sns = boto3.client("sns", endpoint_url=moto_endpoint, region_name=region)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name=region)
    topic = sns.create_topic(Name=f"alerts-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"ops-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    def read() -> list[dict]:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    return topic, read


def test_dead_letter_alert_is_published_to_sns(
    subscribed_topic, moto_endpoint, resources, pg_queues, db
):
    topic, read = subscribed_topic
    alerts = AlertsResource(
        warehouse=resources["warehouse"], sns_topic_arn=topic, aws_endpoint_url=moto_endpoint
    )
    pg_queues.send("activities", [{"activity_id": "poison", "recipient": "jo@example.org"}])

    def reject_all(messages):
        return BatchOutcome(rejected={m.receipt: "activity_id poison: actor_type is missing"
                                      for m in messages})  # fmt: skip

    report = drain(pg_queues, "activities", reject_all, raise_alert=alerts.raise_alert)
    assert report.rejected == 1
    [envelope] = read()
    assert (
        envelope["TopicArn"] == topic
        and envelope["Subject"] == "supportflow error: queue:activities"
    )
    alert = json.loads(envelope["Message"])
    assert alert["source"] == "queue:activities" and alert["count"] == 1
    assert "dead-letter queue of activities" in alert["summary"]
    assert alert["errors"] == ["activity_id poison: actor_type is missing"]
    assert "jo@example.org" not in envelope["Message"]  # the alert carries no message bodies
    stored = db.execute(
        "select count(*) from control.alerts where source = 'queue:activities' "
        "and details->>'count' = '1'"
    ).fetchone()[0]
    assert stored >= 1


def test_sns_still_gets_the_alert_when_the_warehouse_is_down(subscribed_topic, moto_endpoint):
    topic, read = subscribed_topic
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = WarehouseResource(
        database_url=f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2",
        pool_timeout_seconds=2,
    )
    alerts = AlertsResource(warehouse=down, sns_topic_arn=topic, aws_endpoint_url=moto_endpoint)
    alerts.raise_alert("feedback_source:ws/forum", "feedback source ws/forum failed", {"n": 1})
    [envelope] = read()
    assert json.loads(envelope["Message"])["source"] == "feedback_source:ws/forum"
