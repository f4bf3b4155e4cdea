"""The Dagster wiring of group `feedback`: schedules target the right jobs and partitions, the
queue sensor skips an empty queue, the on-demand job takes a workspace."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest


def test_insight_reports_schedule_builds_yesterday(dagster_resources):
    from assets.feedback.defs import defs

    bound = dg.Definitions.merge(defs, dg.Definitions(resources=dagster_resources))
    schedule = bound.resolve_schedule_def("insight_reports_schedule")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 10, 0, 40, tzinfo=UTC)
    )
    requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == ["2026-03-09"]
    assert schedule.job_name == "insight_reports_job"


def test_pull_schedule_and_jobs():
    from assets.feedback.defs import defs, feedback_pull_schedule

    assert feedback_pull_schedule.job_name == "feedback_ingest_job"
    assert feedback_pull_schedule.cron_schedule == "*/15 * * * *"
    names = {job.name for job in defs.jobs}
    assert names == {"feedback_ingest_job", "feedback_pull_job", "insight_reports_job"}


def test_queue_sensor_skips_an_empty_queue(feedback_queue, dagster_resources):
    from sensors.feedback import feedback_queue_sensor

    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=dagster_resources) as context:
            result = feedback_queue_sensor.evaluate_tick(context)
    assert not result.run_requests and "empty" in result.skip_message


def test_on_demand_pull_of_an_unknown_workspace_fails_clearly(dagster_resources):
    from assets.feedback.defs import feedback_items

    with pytest.raises(Exception, match="no workspace named 'nope-nope'"):
        dg.materialize(
            [feedback_items],
            resources=dagster_resources,
            run_config={"ops": {"feedback_items": {"config": {"workspace": "nope-nope"}}}},
        )
