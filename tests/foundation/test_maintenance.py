"""The daily queue housekeeping job, run through Dagster."""

from __future__ import annotations

import uuid

import dagster as dg

from orchestration.maintenance import queue_maintenance


def test_queue_maintenance_forgets_only_old_acknowledged_ids(db, resources):
    old, recent = f"old-{uuid.uuid4().hex}", f"recent-{uuid.uuid4().hex}"
    db.execute(
        "insert into control.queue_acks (queue, dedup_id, acked_at) values "
        "('activities', %s, now() - interval '15 days'), ('activities', %s, now())",
        (old, recent),
    )
    result = queue_maintenance.execute_in_process(
        resources={"warehouse": resources["warehouse"]}, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    assert result.output_for_node("prune_queue_ack_ledger") >= 1
    left = {
        r[0]
        for r in db.execute(
            "select dedup_id from control.queue_acks where dedup_id in (%s, %s)", (old, recent)
        )
    }
    assert left == {recent}
