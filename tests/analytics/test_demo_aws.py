"""`supportflow demo` in the production shape: SQS queues, S3 export storage and SNS alerts on
moto's server. A file of its own, so the test run can place it beside test_demo.py's demos."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.analytics.test_demo import STABLE_TABLES, _row_counts, _supportflow


@pytest.mark.slow
@pytest.mark.timeout(560)
def test_the_demo_in_the_aws_shape_gives_the_same_tables_with_its_files_on_s3(
    moto_endpoint, tmp_path
):
    """`supportflow demo` with SQS queues, S3 export storage and SNS alerts (moto's server)
    leaves the same tables as the embedded default, and its export files are in the bucket.
    Both run with a small conversation stream: moto's SQS slows down as a queue grows."""
    import uuid

    import boto3

    run = uuid.uuid4().hex[:8]
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **_keys(aws))
    s3.create_bucket(Bucket=f"demo-{run}")
    sns = boto3.client("sns", endpoint_url=moto_endpoint, region_name="us-east-1", **_keys(aws))
    topic = sns.create_topic(Name=f"demo-alerts-{run}")["TopicArn"]
    env = {
        **aws,
        "SUPPORTFLOW_QUEUE_BACKEND": "sqs",
        "SUPPORTFLOW_SQS_PREFIX": f"demo-{run}-",
        "SUPPORTFLOW_SQS_WAIT_SECONDS": "1",
        "SUPPORTFLOW_EXPORT_URL": f"s3://demo-{run}/exports",
        "SUPPORTFLOW_ALERT_SNS_TOPIC_ARN": topic,
    }
    small = ("demo", "--conversation-messages", "200")
    outputs = {}
    for shape, extra_env in (("embedded", {}), ("aws", env)):
        home = tmp_path / f"{shape}-home"
        try:
            demo = _supportflow(home, *small, extra_env=extra_env, timeout=400)
            assert demo.returncode == 0, (shape, demo.stderr[-3000:])
        finally:
            _supportflow(home, "db", "stop", timeout=60)
        outputs[shape] = demo.stdout
    embedded, counts = _row_counts(outputs["embedded"]), _row_counts(outputs["aws"])
    assert set(counts) == set(embedded) and set(STABLE_TABLES) <= set(counts)
    clocked = ("raw.activities", "analytics.agg_activity_daily")  # the clock, as above
    same = [t for t in counts if t not in clocked]
    assert {t: counts[t] for t in same} == {t: embedded[t] for t in same}
    assert all(counts[t] >= embedded[t] for t in clocked)
    demo = subprocess.CompletedProcess(small, 0, outputs["aws"])
    assert f"Files under s3://demo-{run}/exports" in demo.stdout
    stored = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=f"demo-{run}")
        for item in page.get("Contents", [])
    ]
    activity_files = [k for k in stored if k.startswith("exports/activities/tenant=")]
    shown = re.search(r"activity exports: (\d+) files", demo.stdout).group(1)
    assert activity_files and int(shown) == len(activity_files)
    assert {k.rsplit(".", 1)[1] for k in activity_files} == {"csv", "parquet"}
    report = re.search(r"latest insight report \(HTML\): (\S+)", demo.stdout).group(1)
    assert report.startswith(f"s3://demo-{run}/exports/insight_reports/")
    key = report.removeprefix(f"s3://demo-{run}/")
    assert "<html" in s3.get_object(Bucket=f"demo-{run}", Key=key)["Body"].read().decode().lower()
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1", **_keys(aws))
    queues = sqs.list_queues(QueueNamePrefix=f"demo-{run}-").get("QueueUrls", [])
    assert any(url.endswith(f"demo-{run}-activities") for url in queues), queues


def _keys(aws: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
    }
