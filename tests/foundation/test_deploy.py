"""The production instance config (deploy/dagster.yaml) on a real PostgreSQL, its queued run
coordinator keeping one run per desk, and the run-failure alert sensor."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import dagster as dg
import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
JOBS_FILE = Path(__file__).with_name("deploy_jobs.py")
DESK_TAG = "supportflow/desk"
COMPUTE_LOGS_BUCKET = f"dagster-logs-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def production_instance(db_url, moto_endpoint, tmp_path_factory):
    """deploy/dagster.yaml as-is, its storage pointed (by env var) at a fresh database and its
    compute logs at a bucket in moto's S3."""
    from resources.warehouse import conninfo_to_url, ensure_database, with_database

    dbname = f"dagster_deploy_{uuid.uuid4().hex[:8]}"
    ensure_database(db_url, dbname)
    url = conninfo_to_url(with_database(db_url, dbname))
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as monkeypatch:
        # the driver is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (README)
        monkeypatch.setenv(
            "DAGSTER_POSTGRES_URL", url.replace("postgresql://", "postgresql+psycopg2://")
        )
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        for name, value in {
            "AWS_ENDPOINT_URL": moto_endpoint,  # boto3 reads it: the code server and runs too
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "DAGSTER_COMPUTE_LOGS_BUCKET": COMPUTE_LOGS_BUCKET,
            "DAGSTER_COMPUTE_LOGS_PREFIX": "compute-logs",
        }.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3").create_bucket(Bucket=COMPUTE_LOGS_BUCKET)
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield instance
        finally:
            instance.dispose()
            with psycopg.connect(db_url, autocommit=True) as conn:
                drop = sql.SQL("drop database if exists {} with (force)")
                conn.execute(drop.format(sql.Identifier(dbname)))


def test_production_instance_uses_postgres_and_the_queued_coordinator(production_instance):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    instance = production_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    assert queue.max_concurrent_runs == 10
    per_value = {"applyLimitPerUniqueValue": True}
    assert {"key": DESK_TAG, "value": per_value, "limit": 1} in queue.tag_concurrency_limits
    assert {"key": "supportflow/queue", "value": per_value, "limit": 1} in (
        queue.tag_concurrency_limits
    )
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert isinstance(instance.compute_log_manager, S3ComputeLogManager)


def _load_job():
    spec = importlib.util.spec_from_file_location("deploy_jobs", JOBS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.desk_sync_stand_in


@pytest.fixture
def code_server(production_instance):
    """The test job's code server in its own process group; run workers are its children, so
    stopping the group leaves nothing behind."""
    from dagster._grpc.client import DagsterGrpcClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(Path(sys.executable).parent / "dagster"), "api", "grpc", "-h", "127.0.0.1"]
    command += ["-p", str(port), "-f", str(JOBS_FILE), "-d", str(ROOT)]
    proc = subprocess.Popen(
        [*command, "--location-name", "deploy_test"],
        env=os.environ.copy(),  # DAGSTER_HOME and DAGSTER_POSTGRES_URL of the fixture
        start_new_session=True,
    )
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the code server exited"
            try:
                client.ping("ready?")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.slow
def test_runs_for_one_desk_never_overlap_while_other_desks_run_alongside(
    production_instance, code_server, tmp_path
):
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import GrpcServerTarget
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )

    instance = production_instance
    job = _load_job()
    hold_tag = "supportflow-test/hold-dir"  # deploy_jobs.HOLD_DIR_TAG: each run waits there
    target = GrpcServerTarget(
        host="127.0.0.1", port=code_server, socket=None, location_name="deploy_test"
    )
    with WorkspaceProcessContext(instance, target) as workspace:
        request = workspace.create_request_context()
        location = request.get_code_location("deploy_test")
        [repository] = location.get_repositories().values()
        remote_job = repository.get_full_job(job.name)
        runs = {}
        for name, desk in (("a1", "desk-a"), ("a2", "desk-a"), ("b1", "desk-b")):
            # what the UI's launchpad does for a partition: the partition's tags, from the job
            partition_tags = job.get_tags_for_partition_key(desk, selected_asset_keys=None)
            assert partition_tags[DESK_TAG] == desk
            run = instance.create_run_for_job(
                job_def=job,
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
                tags={**partition_tags, hold_tag: str(tmp_path)},
            )
            instance.submit_run(run.run_id, request)
            runs[name] = run.run_id
        assert all(
            instance.get_run_by_id(r).status == dg.DagsterRunStatus.QUEUED for r in runs.values()
        )

        def status(key: str) -> dg.DagsterRunStatus:
            return instance.get_run_by_id(runs[key]).status

        def holding(key: str) -> bool:  # the run is inside its op, holding the desk
            return (tmp_path / f"{runs[key]}.started").exists()

        def release(key: str) -> None:
            (tmp_path / f"{runs[key]}.release").touch()

        finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}
        with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:

            def dequeue_until(condition, what: str) -> None:
                deadline = time.monotonic() + 150
                while not condition():
                    assert time.monotonic() < deadline, what
                    list(daemon.run_iteration(workspace))
                    time.sleep(0.2)

            # the first pass may start one run per desk, no more
            list(daemon.run_iteration(workspace))
            assert status("a2") == dg.DagsterRunStatus.QUEUED
            assert status("a1") != dg.DagsterRunStatus.QUEUED
            assert status("b1") != dg.DagsterRunStatus.QUEUED
            # both desks' first runs hold their desks at the same time ...
            dequeue_until(lambda: holding("a1") and holding("b1"), "a1 and b1 never both ran")
            # ... and while desk-a is held its second run stays queued
            list(daemon.run_iteration(workspace))
            assert status("a2") == dg.DagsterRunStatus.QUEUED and not holding("a2")
            release("b1")
            release("a1")
            dequeue_until(lambda: holding("a2"), "a2 never started after a1 ended")
            release("a2")
            dequeue_until(
                lambda: all(status(k) in finished for k in runs), "the runs never finished"
            )

    records = {k: instance.get_run_record_by_id(r) for k, r in runs.items()}
    for key, record in records.items():
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, key
    a1, a2, b1 = (records[k] for k in ("a1", "a2", "b1"))
    # the same desk: the second run started only after the first had ended
    assert a2.start_time >= a1.end_time
    # another desk: ran alongside the first
    assert b1.start_time < a1.end_time and a1.start_time < b1.end_time
    # every run's step output reached the compute-log bucket (deploy/dagster.yaml, compute_logs)
    listing = boto3.client("s3").list_objects_v2(Bucket=COMPUTE_LOGS_BUCKET, Prefix="compute-logs/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    for key, run_id in runs.items():
        assert any(run_id in k for k in keys), (key, keys)


def test_run_failure_sensor_raises_an_alert(resources, db):
    from sensors.alerts import alert_on_run_failure

    @dg.op
    def call_the_api():
        raise ConnectionError("Zendesk answered 503 three times")

    @dg.job(tags={DESK_TAG: "desk-alerts"})
    def failing_sync():
        call_the_api()

    instance = dg.DagsterInstance.ephemeral()
    result = failing_sync.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    # nested resources (alerts -> warehouse) are opened inside the context manager's scope
    with dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alerts": resources["alerts"]},
    ) as context:
        alert_on_run_failure(context.for_run_failure())

    row = db.execute(
        "select source, summary, details from control.alerts where details->>'run_id' = %s",
        (result.run_id,),
    ).fetchone()
    assert row is not None
    source, summary, details = row
    assert source == "run:failing_sync"
    assert result.run_id in summary
    assert details["tags"] == {DESK_TAG: "desk-alerts"}
    assert "call_the_api" in details["error"]


def test_helm_values_carry_the_same_run_queue_as_the_instance_config():
    import yaml

    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    values = yaml.safe_load((ROOT / "deploy" / "helm-values.yaml").read_text())
    queued = instance["run_coordinator"]["config"]
    helm = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert helm["maxConcurrentRuns"] == queued["max_concurrent_runs"]
    assert helm["tagConcurrencyLimits"] == queued["tag_concurrency_limits"]
    assert (
        values["dagsterDaemon"]["runRetries"]["maxRetries"]
        == (instance["run_retries"]["max_retries"])
    )
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", "orchestration.definitions"]
