"""The AWS sides of two resources, on moto's server (real HTTP, real boto3): export storage on S3
through dagster-aws's S3Resource (`SUPPORTFLOW_EXPORT_URL=s3://bucket/prefix`, `AWS_ENDPOINT_URL`)
and alerts published to SNS (`SUPPORTFLOW_ALERT_SNS_TOPIC_ARN`, in the topic's own region)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import dagster as dg
import pandas as pd
import psycopg
from dagster_aws.s3 import S3Resource

from assets.activities import defs as activities
from assets.activities.export import day_bounds
from assets.activities.rules import parse_activity
from assets.activities.store import insert_activities
from resources.alerts import AlertsResource
from resources.runtime import build_resources
from resources.settings import Settings
from resources.storage import ExportStorage
from resources.warehouse import WarehouseResource
from tests.activities.helpers import make_event


def test_s3_storage_writes_reads_and_names_objects_under_the_prefix(aws):
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket=bucket)
    storage = ExportStorage(export_url=f"s3://{bucket}/acme/", s3=S3Resource(endpoint_url=aws))
    assert storage.is_s3
    uri = storage.write_bytes("reports/r.html", b"<h1>report</h1>", "text/html")
    assert uri == f"s3://{bucket}/acme/reports/r.html"
    head = s3.head_object(Bucket=bucket, Key="acme/reports/r.html")
    assert head["ContentType"] == "text/html" and head["ContentLength"] == 15
    assert storage.read_bytes("reports/r.html") == b"<h1>report</h1>"


def test_the_environment_configures_the_s3_resource_of_the_export_storage(aws, sf_home):
    """SUPPORTFLOW_EXPORT_URL and AWS_ENDPOINT_URL as before, now as dagster-aws's S3Resource
    nested in the export storage (what the Dagster UI shows), in the code location's resources
    and the CLI's alike."""
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=aws).create_bucket(Bucket=bucket)
    settings = Settings.from_env(
        {
            "SUPPORTFLOW_HOME": str(sf_home),
            "SUPPORTFLOW_EXPORT_URL": f"s3://{bucket}/eu",
            "AWS_ENDPOINT_URL": aws,
        }
    )
    for for_dagster in (True, False):
        storage = build_resources(settings, for_dagster=for_dagster)["export_storage"]
        assert isinstance(storage.s3, S3Resource) and storage.s3.endpoint_url == aws
        assert storage.write_bytes("x.txt", b"from the environment") == f"s3://{bucket}/eu/x.txt"
        assert storage.read_bytes("x.txt") == b"from the environment"
        assert storage.delete("x.txt") and not storage.delete("x.txt")
    local = build_resources(Settings.from_env({"SUPPORTFLOW_HOME": str(sf_home)}))
    assert not local["export_storage"].is_s3  # the embedded default is still a directory


def day_rows(db_url: str, tenant: str, day) -> list[tuple]:
    """The tenant's user activities of `day` in the table, in the export's order."""
    start, end = day_bounds(day)
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "select tenant_id, activity_id, ticket_id, actor_id, action, category, occurred_at,"
            " details::text from raw.activities where tenant_id = %s and actor_type = 'user'"
            " and occurred_at >= %s and occurred_at < %s order by occurred_at, activity_id",
            (tenant, start, end),
        ).fetchall()


def test_activity_export_to_s3(aws, db_url, resources):
    tenant = f"s3-{uuid.uuid4().hex[:8]}"  # the day's other tenants go to the bucket too
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket=bucket)
    day = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    at = [noon + timedelta(minutes=n) for n in range(3)]
    events = [make_event(tenant, n, when=at[n].isoformat()) for n in range(3)]
    events += [  # neither is in the day's export: an automation rule, and the next day
        make_event(tenant, 3, when=at[1].isoformat(), actor_type="system", actor_id="rule-7"),
        make_event(tenant, 4, when=(noon + timedelta(days=1)).isoformat()),
    ]
    with psycopg.connect(db_url) as conn:
        insert_activities(conn, [parse_activity(event) for event in events])
    storage = ExportStorage(export_url=f"s3://{bucket}/prod", s3=S3Resource(endpoint_url=aws))
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
    # the object read back is the day's rows of the table, column for column
    from_s3 = [
        tuple(v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in row)
        for row in frame.itertuples(index=False)
    ]
    table = day_rows(db_url, tenant, day)
    assert len(table) == 3 and from_s3 == table
    assert list(frame.columns) == [
        "tenant_id", "activity_id", "ticket_id", "actor_id", "action", "category",
        "occurred_at", "details",
    ]  # fmt: skip
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
