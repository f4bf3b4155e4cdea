"""The activities domain's asset checks, run by the real drain and export jobs: a day of
activities before the partitions start fails `activity_days_within_partitions`, and a day whose
re-export waited longer than its lag fails `exports_match_their_day`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.activities.helpers import make_event


def _check_results(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _drain(activity_defs, instance):
    return activity_defs.resolve_job_def("activities_drain").execute_in_process(instance=instance)


def test_an_activity_before_the_partitions_start_fails_the_check_after_the_drain(
    activity_tables, activity_defs, instance, resources, tenant, db
):
    # the tests' partitions start 2024-01-01 (tests/conftest.py); a day before it is what an
    # operator gets by moving SUPPORTFLOW_PARTITIONS_START past data already stored (the drain
    # itself refuses activities older than the retention period)
    db.execute("select raw.ensure_activity_partition('2023-12-31')")
    db.execute(
        "insert into raw.activities (activity_id, occurred_at, tenant_id, ticket_id, actor_type,"
        " actor_id, action, category) values (%s, '2023-12-31T23:30:00Z', %s, 1, 'user', 'a1',"
        " 'replied', 'reply')",
        (f"{tenant}-old", tenant),
    )
    resources["queues"].send("activities", [make_event(tenant, 2)])
    try:
        result = _drain(activity_defs, instance)
    finally:  # the retention tests count partition tables: leave none of ours behind
        db.execute("drop table raw.activities_p20231231")
    assert result.success
    check = _check_results(result)["activity_days_within_partitions"]
    assert not check.passed
    metadata = {k: v.value for k, v in check.metadata.items()}
    assert metadata["partitions_start"] == "2024-01-01"
    assert (metadata["days_before_start"], metadata["activities_before_start"]) == (1, 1)
    assert metadata["first_days"] == ["2023-12-31"]


def test_the_check_passes_when_every_activity_is_inside(
    activity_tables, activity_defs, instance, resources, tenant
):
    resources["queues"].send("activities", [make_event(tenant, 1, when="2024-01-01T00:00:00Z")])
    check = _check_results(_drain(activity_defs, instance))["activity_days_within_partitions"]
    assert check.passed and check.metadata["days_before_start"].value == 0


def test_a_re_export_waiting_past_its_lag_fails_the_export_check(
    activity_tables, activity_defs, instance, resources, tenant, db
):
    now = datetime.now(UTC)
    # a day changed 30 minutes after its export and not re-exported since; one changed just now
    db.execute(
        "insert into control.activity_export_days (day, exported_at, changed_at) values"
        " ('2024-03-01', %s, %s), ('2024-03-02', %s, %s)",
        (now - timedelta(hours=1), now - timedelta(minutes=30), now - timedelta(hours=1), now),
    )
    job = activity_defs.resolve_job_def("activity_export_daily")
    result = job.execute_in_process(instance=instance, partition_key="2024-03-05")
    assert result.success
    check = _check_results(result)["exports_match_their_day"]
    assert not check.passed
    assert check.metadata["first_stale_days"].value == ["2024-03-01"]  # the fresh one may wait
    db.execute(
        "update control.activity_export_days set exported_at = now() where day = '2024-03-01'"
    )
    result = job.execute_in_process(instance=instance, partition_key="2024-03-05")
    assert _check_results(result)["exports_match_their_day"].passed
