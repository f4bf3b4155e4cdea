"""Refused webhook input (control.rejected_input) is kept byte for byte, read back newest
first, and pruned by the daily queue maintenance after REJECTED_INPUT_DAYS (personal data)."""

from __future__ import annotations

import dagster as dg

from orchestration.maintenance import queue_maintenance
from resources.rejected import (
    REJECTED_INPUT_DAYS,
    keep_rejected_input,
    recent_rejected_input,
)


def test_kept_byte_for_byte_and_pruned_after_the_window(db, resources):
    db.execute("truncate control.rejected_input")
    body = b'{"text": "a\\u0000b", "n": NaN}\x00\xff'  # not even UTF-8: bytea keeps it
    old = keep_rejected_input(db, source="/webhooks/mailgun", reason="old", body=body)
    db.execute(
        "update control.rejected_input set received_at = now() - make_interval(days => %s) "
        "where rejected_id = %s",
        (REJECTED_INPUT_DAYS + 1, old),
    )
    recent = keep_rejected_input(
        db, source="/webhooks/sendgrid", reason="recent", body=body, queue="email_events"
    )
    [newest, oldest] = recent_rejected_input(db)
    assert (newest.rejected_id, newest.body, newest.queue) == (recent, body, "email_events")
    assert oldest.reason == "old" and len(newest.body_sha256) == 64
    result = queue_maintenance.execute_in_process(
        resources={"warehouse": resources["warehouse"]}, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success and result.output_for_node("prune_rejected_webhook_input") == 1
    assert [r.rejected_id for r in recent_rejected_input(db)] == [recent]
