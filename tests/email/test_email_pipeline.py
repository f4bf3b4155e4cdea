"""End to end: sent notifications and a messy stream of provider receipts (duplicates,
reordering, receipts before their notification) go webhooks (HTTP) -> queue email_events ->
router -> email_events.<pod> -> sensors -> drain runs (real Dagster), and the statuses, delivery
events and template statistics equal what the rules give. The expectation is computed from the
generated stream by the simple model below, not by the pipeline's code."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from sandbox.email_events import INTERNAL_SENDER
from tests.email.helpers import email_defs

ZONE = "Europe/Berlin"

# The rules, restated independently: kind of event in the generated stream -> status it sets.
FINAL = {
    "delivered": "delivered",
    "temporary": "temporary-failure",
    "blocked": "temporary-failure",
    "undetermined": "temporary-failure",
    "permanent": "permanent-failure",
    "dropped": "permanent-failure",
    "technical": "technical-failure",
}


def expected_outcome(scenario):
    """Statuses, stored events and orphans as the rules say, in the order receipts arrived."""
    known = {n["notification_id"] for n in scenario.notifications + scenario.late_notifications}
    status = dict.fromkeys(known, "sending")
    stored: dict[tuple[str, str], str | None] = {}
    for request in scenario.requests:
        for event in request.events:
            key = (event.provider, event.provider_event_id)
            if event.sender == INTERNAL_SENDER or key in stored:
                continue
            nid = event.notification_id if event.notification_id in known else None
            stored[key] = nid
            if nid is None:
                continue
            if event.kind == "accepted" and status[nid] == "sending":
                status[nid] = "pending"
            elif FINAL.get(event.kind) == "temporary-failure" and status[nid] == "sending":
                status[nid] = "permanent-failure"  # the seed: temporary only once accepted
            elif event.kind in FINAL and status[nid] in ("sending", "pending"):
                status[nid] = FINAL[event.kind]
    return status, stored


class Pipeline:
    """Ticks the sensors and runs what they request, as the daemon would."""

    def __init__(self, instance, resources, defs_by_pod):
        self.instance = instance
        self.resources = resources
        self.defs_by_pod = defs_by_pod
        self.cursors: dict[str, str | None] = {}
        self.runs: Counter = Counter()
        self.checks = 0

    def tick(self, defs, sensor_name) -> int:
        sensor = defs.resolve_sensor_def(sensor_name)
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors.get(sensor_name), resources=self.resources
        ) as context:
            result = sensor.evaluate_tick(context)
        self.cursors[sensor_name] = result.cursor
        for request in result.run_requests:
            job = defs.resolve_job_def(request.job_name or sensor.job_name)
            outcome = job.execute_in_process(instance=self.instance, tags=request.tags)
            assert outcome.success
            for evaluation in outcome.get_asset_check_evaluations():
                assert evaluation.passed, evaluation.metadata
                self.checks += 1
            self.runs[job.name] += 1
        return len(result.run_requests)

    def round(self) -> int:
        default = self.defs_by_pod["default"]
        launched = self.tick(default, "email_sent_queue_sensor")
        launched += self.tick(default, "email_events_router_sensor")
        for defs in self.defs_by_pod.values():
            launched += self.tick(defs, "email_receipts_queue_sensor")
        return launched

    def queued(self) -> int:
        """Messages in the email queues, visible, in flight or waiting for their retry."""
        return sum(
            stats.visible + stats.in_flight + stats.delayed
            for stats in self.resources["queues"].stats()
            if stats.queue.startswith("email_")
        )

    def until_queues_empty(self, timeout=90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.round()
            left = self.queued()
            if left == 0:
                return
            assert time.monotonic() < deadline, f"{left} messages still queued"
            time.sleep(0.1)  # let the retry delays pass


@pytest.mark.slow
def test_receipts_stream_end_to_end(
    platform, db, email_tables, resources, http, generator, instance, tenant, provider_keys
):
    """In both shapes of the platform (PostgreSQL queues; SQS with pod queues made on first
    use), with the same outcome."""
    from assets.email.store import set_tenant_pod, template_stats
    from resources.queues import MAX_RECEIVES

    eu_tenant = tenant + "-eu"
    set_tenant_pod(db, eu_tenant, "eu")
    common = dict(timezone=ZONE, internal_senders=(INTERNAL_SENDER,), retry_base_seconds=0.05)
    defs_by_pod = {
        "default": email_defs(resources, pod="default", **common),
        "eu": email_defs(resources, pod="eu", **common),
    }
    now = datetime.now(UTC)
    scenario = generator.scenario(
        [tenant, eu_tenant], 14, now, days=3, late_share=0.2, duplicate_share=0.25
    )
    late_found = scenario.late_notifications[::2]  # arrive while their receipts are retried
    late_orphaned = scenario.late_notifications[1::2]  # arrive after their receipts were kept
    assert late_found and late_orphaned
    queues = resources["queues"]
    queues.send("email_sent", scenario.notifications)

    for request in scenario.requests:  # the providers, over HTTP, in arrival order
        response = http.post(request.path, content=request.body, headers=request.headers)
        assert response.status_code == 200, response.text

    pipeline = Pipeline(instance, resources, defs_by_pod)
    pipeline.round()
    assert queues.depth("email_events") == 0  # routed
    queues.send("email_sent", late_found)
    pipeline.until_queues_empty()
    orphan_refs = {
        row[0]
        for row in db.execute(
            "select distinct provider_reference from raw.delivery_events where orphan"
        ).fetchall()
    }
    expected_orphans = {n["provider_reference"] for n in late_orphaned
                        if n["custom_params"]["sender"] != INTERNAL_SENDER}  # fmt: skip
    assert orphan_refs == expected_orphans | set(scenario.never_sent_references)
    queues.send("email_sent", late_orphaned)
    pipeline.until_queues_empty()
    assert pipeline.runs["email_receipts_drain"] >= MAX_RECEIVES
    assert pipeline.checks >= pipeline.runs["email_receipts_drain"]  # status_set_at_most_once

    status, stored = expected_outcome(scenario)
    actual_status = dict(
        db.execute("select notification_id, status from raw.notifications").fetchall()
    )
    assert actual_status == status
    events = {
        (provider, event_id): nid
        for provider, event_id, nid in db.execute(
            "select provider, provider_event_id, notification_id from raw.delivery_events"
        ).fetchall()
    }
    assert events == stored
    assert db.execute("select count(*) from raw.delivery_events where orphan").fetchone() == (
        len(scenario.never_sent_references),
    )
    assert [s for s in queues.stats() if s.dead] == []
    # every failure is on its ticket's timeline, once
    failures = {nid for nid, s in status.items() if s.endswith("-failure")}
    timeline = db.execute(
        "select details->>'notification_id', count(*) from raw.activities "
        "where action = 'email_delivery_failed' and tenant_id = any(%s) group by 1",
        ([tenant, eu_tenant],),
    ).fetchall()
    assert dict(timeline) == dict.fromkeys(failures, 1)

    # template statistics: notifications by (local day, template, current status)
    zone = ZoneInfo(ZONE)
    everything = scenario.notifications + scenario.late_notifications
    expected_counts = Counter(
        (
            datetime.fromisoformat(n["sent_at"]).astimezone(zone).date(),
            n["tenant_id"],
            n["template_id"],
            status[n["notification_id"]],
        )
        for n in everything
    )
    today = now.astimezone(zone).date()
    days = sorted({day for day, *_ in expected_counts if day < today})
    job = defs_by_pod["default"].resolve_job_def("template_stats_daily")
    for _ in range(2):  # re-materializing gives the same rows
        for day in days:
            assert job.execute_in_process(instance=instance, partition_key=day.isoformat()).success
        rows = db.execute(
            "select day, tenant_id, template_id, status, notification_count "
            "from analytics.template_stats_daily"
        ).fetchall()
        assert Counter({tuple(r[:4]): r[4] for r in rows}) == Counter(
            {k: v for k, v in expected_counts.items() if k[0] < today}
        )
    for who in (tenant, eu_tenant):
        live = template_stats(db, who, 7, zone, datetime.now(UTC))
        got = Counter({(s.day, who, s.template_id, s.status): s.notification_count for s in live})
        want = Counter({k: v for k, v in expected_counts.items() if k[1] == who})
        assert got == want
    # duplicates cannot inflate counts: the totals are the notifications, not the receipts
    assert sum(expected_counts.values()) == len(everything)


def test_each_pods_receipts_arrive_only_on_its_queue(
    platform, db, email_tables, resources, http, generator, instance, tenant
):
    """The router sends a tenant's receipts to its pod's queue, made on first use (on SQS a
    queue with its dead-letter queue), and no other pod's queue sees them."""
    import uuid

    import boto3

    from assets.email.store import set_tenant_pod

    pod = f"p{uuid.uuid4().hex[:6]}"
    moved = f"{tenant}-{pod}"
    set_tenant_pod(db, moved, pod)
    queues = resources["queues"]

    def sqs_queue_names() -> set[str]:
        sqs = boto3.client("sqs", endpoint_url=platform.settings.aws_endpoint_url)
        prefix = platform.settings.sqs_prefix
        return {
            url.rsplit("/", 1)[1]
            for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
        }

    if platform.is_aws:
        assert not any(pod in name for name in sqs_queue_names())
    scenario = generator.scenario(
        [tenant, moved], 4, datetime.now(UTC), days=1, late_share=0, duplicate_share=0,
        internal_share=0, never_sent=0,
    )  # fmt: skip
    for request in scenario.requests:
        assert http.post(request.path, content=request.body, headers=request.headers).is_success
    defs = email_defs(resources, retry_base_seconds=0.05)
    assert defs.resolve_job_def("email_events_router").execute_in_process(instance=instance).success
    assert queues.depth("email_events") == 0

    def tenants_on(queue: str) -> Counter:
        seen: Counter = Counter()
        while batch := queues.receive(queue, max_messages=100, visibility_timeout=60):
            seen.update(m.body["tenant_id"] for m in batch)
            queues.ack(batch)
        return seen

    expected = Counter(e.tenant_id for r in scenario.requests for e in r.events)
    assert tenants_on(f"email_events.{pod}") == Counter({moved: expected[moved]})
    assert tenants_on("email_events.default") == Counter({tenant: expected[tenant]})
    if platform.is_aws:
        created = {name for name in sqs_queue_names() if pod in name}
        assert len(created) == 2  # the pod's queue and its dead-letter queue


def test_malformed_messages_are_dead_lettered_with_the_reason(
    db, email_tables, resources, instance, generator, tenant
):
    defs = email_defs(resources, retry_base_seconds=0.05)
    queues = resources["queues"]
    good = generator.notification(tenant, 9, "reply", "mailgun", datetime.now(UTC))
    imposter = {**good, "notification_id": "another-id"}
    queues.send("email_sent", [good, {**good, "notification_id": "x", "recipient": "nobody"}])
    queues.send("email_sent", [imposter])
    queues.send("email_events", [{"type": "email_event", "event_id": "mailgun:1"}])
    unknown_tenant = {
        "type": "email_event",
        "event_id": "sendgrid:e1",
        "provider": "sendgrid",
        "provider_event_id": "e1",
        "provider_reference": "ref-1",
        "tenant_id": "nobody-routes-me",
        "event_type": "delivered",
        "outcome": "delivered",
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {},
    }
    queues.send("email_events", [unknown_tenant])
    for job in ("email_sent_drain", "email_events_router"):
        assert defs.resolve_job_def(job).execute_in_process(instance=instance).success
    dead = {
        (row[0], row[1])
        for row in db.execute("select queue, error from control.queue_dead_letters").fetchall()
    }
    assert dead == {
        ("email_sent", "recipient: not an email address"),
        ("email_sent", "provider_reference already belongs to another notification_id"),
        ("email_events", "provider: missing"),
    }
    assert queues.depth("email_events.default") == 1  # unknown tenant -> the default pod
    alerts = db.execute(
        "select source from control.alerts where source like 'queue:email%%'"
    ).fetchall()
    assert {a[0] for a in alerts} >= {"queue:email_sent", "queue:email_events"}


def test_receipts_sensor_watches_the_pod_from_the_environment(
    monkeypatch, email_tables, resources, instance
):
    from assets.email.defs import EmailDeliverySettings
    from resources.settings import Settings

    monkeypatch.setenv("SUPPORTFLOW_POD", "eu-2")
    monkeypatch.setenv("SUPPORTFLOW_EMAIL_TIMEZONE", "Asia/Tokyo")
    config = EmailDeliverySettings.from_settings(Settings.from_env())
    assert (config.pod, config.timezone) == ("eu-2", "Asia/Tokyo")
    defs = email_defs(resources, pod=config.pod, timezone=config.timezone)
    sensor = defs.resolve_sensor_def("email_receipts_queue_sensor")

    def tick():
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return sensor.evaluate_tick(context)

    assert tick().run_requests == []  # nothing waiting: skip
    resources["queues"].send("email_events.default", [{"event_id": "x:1"}])
    assert tick().run_requests == []  # another pod's queue
    resources["queues"].send("email_events.eu-2", [{"event_id": "x:2"}])
    (request,) = tick().run_requests
    assert request.tags["supportflow/queue"] == "email_events.eu-2"
    assert (request.job_name or sensor.job_name) == "email_receipts_drain"
