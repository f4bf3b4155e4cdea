"""The AWS sides of two resources, on moto's server (real HTTP, real boto3): export storage on S3
(`SUPPORTFLOW_EXPORT_URL=s3://bucket/prefix`) and alerts published to SNS
(`SUPPORTFLOW_ALERT_SNS_TOPIC_ARN`, in the topic's own region)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import dagster as dg
import pandas as pd
import psycopg
import pytest

from assets.activities import defs as activities
from assets.activities.rules import parse_activity
from assets.activities.store import insert_activities
from resources.alerts import AlertsResource
from resources.storage import ExportStorage
from resources.warehouse import WarehouseResource
from tests.activities.helpers import make_event


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_endpoint


def test_s3_storage_writes_reads_and_names_objects_under_the_prefix(aws):
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket=bucket)
    storage = ExportStorage(export_url=f"s3://{bucket}/acme/", aws_endpoint_url=aws)
    assert storage.is_s3
    uri = storage.write_bytes("reports/r.html", b"<h1>report</h1>", "text/html")
    assert uri == f"s3://{bucket}/acme/reports/r.html"
    head = s3.head_object(Bucket=bucket, Key="acme/reports/r.html")
    assert head["ContentType"] == "text/html" and head["ContentLength"] == 15
    assert storage.read_bytes("reports/r.html") == b"<h1>report</h1>"


def test_activity_export_to_s3(aws, db_url, resources):
    tenant = f"s3-{uuid.uuid4().hex[:8]}"  # the day's other tenants go to the bucket too
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket=bucket)
    day = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    with psycopg.connect(db_url) as conn:
        insert_activities(
            conn,
            [
                parse_activity(
                    make_event(tenant, n, when=(noon + timedelta(minutes=n)).isoformat())
                )
                for n in range(3)
            ],
        )
    storage = ExportStorage(export_url=f"s3://{bucket}/prod", aws_endpoint_url=aws)
    result = dg.materialize(
        [activities.activity_export],
        partition_key=day.isoformat(),
        resources={"warehouse": resources["warehouse"], "export_storage": storage},
    )
    assert result.success
    folder = f"prod/activities/tenant={tenant}/date={day.isoformat()}"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"prod/activities/tenant={tenant}/")
    keys = sorted(o["Key"] for o in listed["Contents"])
    assert keys == [f"{folder}/activities.csv", f"{folder}/activities.parquet"]
    body = s3.get_object(Bucket=bucket, Key=f"{folder}/activities.parquet")["Body"].read()
    frame = pd.read_parquet(io.BytesIO(body))
    assert list(frame["activity_id"]) == [f"{tenant}-a{n}" for n in range(3)]
    (materialization,) = result.asset_materializations_for_node("activity_export")
    files = materialization.metadata["files"].value[day.isoformat()]
    assert files[tenant]["parquet"] == f"s3://{bucket}/{folder}/activities.parquet"


def test_alert_is_stored_and_published_to_sns_in_the_topics_region(aws, db, db_url, settings):
    region = "eu-west-1"  # not the default region: the alert must go to the topic's own
    sns = boto3.client("sns", endpoint_url=aws, region_name=region)
    sqs = boto3.client("sqs", endpoint_url=aws, region_name=region)
    topic = sns.create_topic(Name=f"alerts-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"alerts-inbox-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    alerts = AlertsResource(
        warehouse=WarehouseResource(database_url=db_url, home=str(settings.home)),
        sns_topic_arn=topic,
        aws_endpoint_url=aws,
    )
    source = f"queue:activities-{uuid.uuid4().hex[:6]}"
    alerts.raise_alert(source, "4 message(s) dead-lettered\nsee the queue", {"count": 4})

    [received] = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=10)["Messages"]
    envelope = json.loads(received["Body"])
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"] == f"supportflow error: {source}"
    assert json.loads(envelope["Message"]) == {
        "source": source,
        "summary": "4 message(s) dead-lettered\nsee the queue",
        "severity": "error",
        "count": 4,
    }
    row = db.execute(
        "select severity, summary, details from control.alerts where source = %s", (source,)
    ).fetchone()
    assert row == ("error", "4 message(s) dead-lettered\nsee the queue", {"count": 4})


def test_an_unreachable_sns_does_not_lose_the_stored_alert(aws, db, db_url, settings):
    alerts = AlertsResource(
        warehouse=WarehouseResource(database_url=db_url, home=str(settings.home)),
        sns_topic_arn="arn:aws:sns:eu-west-1:123456789012:no-such-topic",
        aws_endpoint_url=aws,
    )
    source = f"run:{uuid.uuid4().hex[:6]}"
    alerts.raise_alert(source, "the sync failed")  # SNS answers NotFound: logged, not raised
    assert db.execute(
        "select summary from control.alerts where source = %s", (source,)
    ).fetchall() == [("the sync failed",)]
