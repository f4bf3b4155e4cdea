"""`dbt build` through Dagster over a small, known set of raw rows: the marts hold what the rows
imply and every dbt test (an asset check) passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets.analytics.defs import (
    AnalyticsBuildConfig,
    analytics_dbt_models,
    dbt_env,
    dbt_project,
    dbt_resource,
    dbt_vars,
)

RAW_ASSET_KEYS = [
    "zendesk_tickets",
    "zendesk_users",
    "zendesk_ticket_comments",
    "activities",
    "notifications",
    "delivery_events",
    "feedback_items",
    "conversation_messages",
    "conversation_tickets",
    "conversation_daily",
]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@/supportflow?host=/tmp/sf/pg",
            {"HOST": "/tmp/sf/pg", "PORT": "5432", "USER": "postgres", "DBNAME": "supportflow"},
        ),
        (
            "postgresql://analyst:s%40cret@db.internal:6543/wh?sslmode=require",
            {
                "HOST": "db.internal",
                "PORT": "6543",
                "USER": "analyst",
                "PASSWORD": "s@cret",
                "DBNAME": "wh",
                "SSLMODE": "require",
            },
        ),
        ("host=/run/pg port=5433 dbname=x user=u", {"HOST": "/run/pg", "PORT": "5433"}),
    ],
)
def test_dbt_env_from_warehouse_url(url, expected):
    env = dbt_env(url)
    for key, value in expected.items():
        assert env[f"SUPPORTFLOW_DBT_{key}"] == value


def test_dbt_env_refuses_several_hosts():
    with pytest.raises(ValueError, match="single warehouse host"):
        dbt_env("postgresql://u@a,b/db")


def test_a_build_passes_its_as_of_moment_to_dbt_and_none_without_one():
    assert dbt_vars(AnalyticsBuildConfig()) == []
    assert dbt_vars(AnalyticsBuildConfig(as_of="2026-11-29T23:59:59+01:00")) == [
        "--vars",
        '{"as_of": "2026-11-29T23:59:59+01:00"}',
    ]


@pytest.mark.parametrize(
    ("as_of", "reason"),
    [("yesterday", "not an ISO 8601 timestamp"), ("2026-11-29T12:00:00", "needs a UTC offset")],
)
def test_a_bad_as_of_fails_the_build_naming_the_field(as_of, reason):
    with pytest.raises(dg.Failure, match=f"as_of: {reason}"):
        dbt_vars(AnalyticsBuildConfig(as_of=as_of))


def test_sources_point_at_the_raw_table_assets():
    deps = {dep.asset_key for spec in analytics_dbt_models.specs for dep in spec.deps}
    for key in RAW_ASSET_KEYS:
        assert dg.AssetKey(key) in deps
    marts = {spec.key for spec in analytics_dbt_models.specs if spec.key.path[0] == "analytics"}
    assert {k.path[1] for k in marts} == {
        "fct_tickets",
        "fct_ticket_comments",
        "agg_activity_daily",
        "fct_notifications",
        "template_delivery_7d",
        "agg_feedback_daily",
        "fct_conversation_tickets",
        "agg_conversation_daily",
    }
    assert {spec.group_name for spec in analytics_dbt_models.specs} == {"analytics"}
    assert dbt_project.manifest_path.exists()


# --- the build ----------------------------------------------------------------------------------


def _insert_rows(db, tenant: str) -> dict:
    """A desk with three tickets (one deleted), users, comments, activities over two days,
    notifications (one archived, one outside the 7-day window), a delivery event, feedback."""
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.replace(hour=12, minute=0, second=0)
    if today > now:  # keep every "today" row in the past
        today = now - timedelta(minutes=5)
    yesterday = today - timedelta(days=1)
    window_start = datetime.combine(now.date() - timedelta(days=7), datetime.min.time(), UTC)
    desk_id = db.execute(
        # inactive: the desk sync sensor of other tests in this session must not pick it up
        "insert into control.desks (name, tenant_id, subdomain, base_url, auth_kind, auth_email,"
        " token_encrypted, active) values (%s, %s, %s, %s, 'token', 'a@example.com', %s, false)"
        " returning desk_id",
        (tenant, tenant, tenant, "http://127.0.0.1:9", b"not-a-real-token"),
    ).fetchone()[0]
    requester, agent = 501, 502
    for user_id, name, role in (
        (requester, "Rita Requester", "end-user"),
        (agent, "Al Agent", "agent"),
    ):
        db.execute(
            "insert into raw.zendesk_users (desk_id, user_id, tenant_id, name, email, role,"
            " raw_data) values (%s, %s, %s, %s, %s, %s, '{}')",
            (desk_id, user_id, tenant, name, f"{user_id}@example.com", role),
        )
    solved_raw = {
        "id": 1,
        "satisfaction_rating": {"score": "good"},
        "metric_set": {
            "reply_time_in_minutes": {"calendar": 30, "business": 20},
            "full_resolution_time_in_minutes": {"calendar": 1440, "business": 480},
            "replies": 1,
            "reopens": 0,
        },
    }
    tickets = [
        # (ticket_id, status, created, solved, deleted, raw)
        (1, "solved", today - timedelta(days=2), yesterday, False, solved_raw),
        (2, "open", today - timedelta(hours=3), None, False, {"id": 2}),
        (3, "deleted", today - timedelta(hours=5), None, True, {"id": 3}),
    ]
    for ticket_id, status, created, solved, deleted, raw in tickets:
        db.execute(
            "insert into raw.zendesk_tickets (desk_id, ticket_id, tenant_id, status, subject,"
            " requester_id, req_name, assignee_id, assignee_name, group_id, group_name,"
            " created_at, updated_at, generated_at, solved_at, is_deleted, raw_data)"
            " values (%s, %s, %s, %s, 'help', %s, 'Rita Requester', %s, 'Al Agent', 7, 'Support',"
            " %s, %s, %s, %s, %s, %s)",
            (
                desk_id,
                ticket_id,
                tenant,
                status,
                requester,
                agent,
                created,
                created,
                created,
                solved,
                deleted,
                json.dumps(raw),
            ),
        )
    comments = [
        # (comment_id, ticket_id, author, public, minutes after the ticket was created)
        (11, 1, requester, True, 0),
        (12, 1, agent, True, 30),
        (21, 2, requester, True, 0),
        (22, 2, agent, False, 5),  # internal note: not a reply
        (23, 2, agent, True, 15),
        (31, 3, requester, True, 0),
    ]
    created_by_ticket = {t[0]: t[2] for t in tickets}
    for comment_id, ticket_id, author, public, minutes in comments:
        db.execute(
            "insert into raw.zendesk_ticket_comments (desk_id, comment_id, tenant_id, ticket_id,"
            " author_id, public, body, created_at, raw_data) values (%s, %s, %s, %s, %s, %s,"
            " 'text', %s, '{}')",
            (
                desk_id,
                comment_id,
                tenant,
                ticket_id,
                author,
                public,
                created_by_ticket[ticket_id] + timedelta(minutes=minutes),
            ),
        )

    for day in (today.date(), yesterday.date()):
        db.execute("select raw.ensure_activity_partition(%s)", (day,))
    activities = [
        ("user", "status_changed", "status", today),
        ("user", "status_changed", "status", today + timedelta(seconds=1)),
        ("system", "rule_applied", None, today + timedelta(seconds=2)),
        ("user", "replied", "reply", yesterday),
    ]
    for n, (actor_type, action, category, at) in enumerate(activities):
        db.execute(
            "insert into raw.activities (activity_id, occurred_at, tenant_id, ticket_id,"
            " actor_type, actor_id, action, category) values (%s, %s, %s, 1, %s, 'a1', %s, %s)",
            (f"{tenant}-act-{n}", at, tenant, actor_type, action, category),
        )

    notifications = [
        # (id, template, status, created)
        ("n1", "welcome", "delivered", today),
        ("n2", "welcome", "delivered", today),
        ("n3", "welcome", "permanent-failure", today),
        ("n4", "welcome", "delivered", today - timedelta(days=10)),  # outside the window
        ("n5", "reply", "temporary-failure", yesterday),
        ("n6", "reply", "pending", today),
        # the window's first instant (UTC midnight 7 days before today) and the one before it
        ("e1", "edge", "delivered", window_start),
        ("e2", "edge", "delivered", window_start - timedelta(seconds=1)),
    ]
    for nid, template, status, created in notifications:
        db.execute(
            "insert into raw.notifications (notification_id, tenant_id, ticket_id, template_id,"
            " recipient, provider, provider_reference, status, created_at, sent_at,"
            " status_updated_at) values (%s, %s, '1', %s, 'r@example.com', 'mailgun', %s, %s,"
            " %s, %s, %s)",
            (
                f"{tenant}-{nid}",
                tenant,
                template,
                f"{tenant}-ref-{nid}",
                status,
                created,
                created,
                created + timedelta(seconds=40),
            ),
        )
    db.execute(
        "insert into raw.notification_history (notification_id, tenant_id, ticket_id,"
        " template_id, provider, provider_reference, status, created_at, sent_at,"
        " status_updated_at) values (%s, %s, '1', 'welcome', 'mailgun', %s, 'delivered', %s, %s,"
        " %s)",
        (
            f"{tenant}-h1",
            tenant,
            f"{tenant}-ref-h1",
            today - timedelta(days=5),
            today - timedelta(days=5),
            today - timedelta(days=5),
        ),
    )
    db.execute(
        "insert into raw.delivery_events (provider, provider_event_id, provider_reference,"
        " tenant_id, notification_id, event_type, outcome, severity, reason, occurred_at, payload)"
        " values ('mailgun', %s, %s, %s, %s, 'failed', 'permanent-failure', 'permanent',"
        " 'mailbox does not exist', %s, '{}')",
        (f"{tenant}-ev-1", f"{tenant}-ref-n3", tenant, f"{tenant}-n3", today),
    )

    workspace_id = db.execute(
        "insert into control.workspaces (name, tenant_id) values (%s, %s) returning workspace_id",
        (tenant, tenant),
    ).fetchone()[0]
    source_id = db.execute(
        "insert into control.feedback_sources (workspace_id, name, kind) values (%s, 'push',"
        " 'webhook') returning source_id",
        (workspace_id,),
    ).fetchone()[0]
    feedback = [
        ("f1", today, "positive", 0.8, "en"),
        ("f2", today, "negative", -0.6, "de"),
        ("f3", yesterday, "neutral", 0.0, "en"),
    ]
    for external_id, created, label, score, language in feedback:
        db.execute(
            "insert into raw.feedback_items (item_id, workspace_id, tenant_id, source, source_id,"
            " external_id, text, created_at, content_hash, language, sentiment_label,"
            " sentiment_score) values (%s, %s, %s, 'webhook', %s, %s, 'text', %s, 'h', %s, %s,"
            " %s)",
            (
                f"{tenant}-{external_id}",
                workspace_id,
                tenant,
                source_id,
                external_id,
                created,
                language,
                label,
                score,
            ),
        )
    return {"desk_id": desk_id, "now": now, "today": today.date(), "yesterday": yesterday.date()}


@pytest.fixture(scope="module")
def built(db_url, embedded_resources):
    """Rows for two fresh tenants, then `dbt build` through Dagster with the real
    DbtCliResource; the rows are removed again afterwards."""
    resources = embedded_resources
    import psycopg

    tenant, other = (f"an-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with psycopg.connect(db_url, autocommit=True) as db:
        facts = _insert_rows(db, tenant)
        _insert_rows(db, other)
    # "now" for the 7-day window is the moment the rows were written around, not the build's
    # clock: a build that starts after midnight must not move the window under the test
    result = dg.materialize(
        [analytics_dbt_models],
        resources={"dbt": dbt_resource(), "warehouse": resources["warehouse"]},
        run_config={
            "ops": {"analytics_dbt_models": {"config": {"as_of": facts["now"].isoformat()}}}
        },
        raise_on_error=False,
    )
    facts["other_tenant"] = other
    yield tenant, facts, result
    with psycopg.connect(db_url, autocommit=True) as db:
        for t in (tenant, other):
            _delete_rows(db, t)


def _delete_rows(db, tenant: str) -> None:
    """Leave the shared session database as other domains' tests expect it."""
    for table in (
        "raw.feedback_items",
        "raw.delivery_events",
        "raw.notifications",
        "raw.notification_history",
        "raw.activities",
        "raw.zendesk_ticket_comments",
        "raw.zendesk_users",
        "raw.zendesk_tickets",
        "control.desks",
    ):
        db.execute(f"delete from {table} where tenant_id = %s", (tenant,))  # noqa: S608
    db.execute(
        "delete from control.feedback_sources where workspace_id in"
        " (select workspace_id from control.workspaces where tenant_id = %s)",
        (tenant,),
    )
    db.execute("delete from control.workspaces where tenant_id = %s", (tenant,))


def _rows(db, query: str, tenant: str) -> list[dict]:
    from psycopg.rows import dict_row

    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (tenant,)).fetchall()


def test_dbt_build_succeeds_and_every_dbt_test_passes(built):
    _, _, result = built
    assert result.success
    checks = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(checks) >= 50
    assert [c.check_name for c in checks if not c.passed] == []
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"analytics/fct_tickets", "analytics/template_delivery_7d"} <= materialized


def test_fct_tickets(built, db):
    tenant, _, _ = built
    rows = _rows(
        db, "select * from analytics.fct_tickets where tenant_id = %s order by ticket_id", tenant
    )
    assert [r["ticket_id"] for r in rows] == [1, 2]  # the deleted ticket is gone
    solved, open_ = rows
    assert solved["first_reply_minutes"] == 30 and solved["full_resolution_minutes"] == 1440
    assert solved["satisfaction_score"] == "good" and solved["comment_count"] == 2
    assert solved["group_name"] == "Support" and solved["requester_name"] == "Rita Requester"
    # no metric values: derived from the first public reply by someone else than the requester
    assert open_["first_reply_minutes"] == 15 and open_["full_resolution_minutes"] is None
    assert (open_["comment_count"], open_["public_comment_count"]) == (3, 2)


def test_fct_ticket_comments(built, db):
    tenant, _, _ = built
    rows = _rows(
        db,
        "select comment_id, author_role, position_in_ticket from analytics.fct_ticket_comments"
        " where tenant_id = %s order by comment_id",
        tenant,
    )
    assert [(r["comment_id"], r["author_role"], r["position_in_ticket"]) for r in rows] == [
        (11, "end-user", 1),
        (12, "agent", 2),
        (21, "end-user", 1),
        (22, "agent", 2),
        (23, "agent", 3),
    ]


def test_agg_activity_daily(built, db):
    tenant, facts, _ = built
    rows = _rows(
        db,
        "select activity_day, category, user_activities, system_activities, total_activities"
        " from analytics.agg_activity_daily where tenant_id = %s order by activity_day, category",
        tenant,
    )
    assert [tuple(r.values()) for r in rows] == [
        (facts["yesterday"], "reply", 1, 0, 1),
        (facts["today"], "status", 2, 0, 2),
        (facts["today"], "system", 0, 1, 1),
    ]


def test_template_delivery_7d_counts_the_last_7_days_plus_today(built, db):
    tenant, _, _ = built
    rows = _rows(
        db,
        "select template_id, sent, delivered, temporary_failures, permanent_failures, in_flight,"
        " delivery_rate from analytics.template_delivery_7d where tenant_id = %s"
        " order by template_id",
        tenant,
    )
    assert [tuple(r.values()) for r in rows] == [
        ("edge", 1, 1, 0, 0, 0, 1),
        ("reply", 2, 0, 1, 0, 1, 0),
        # 3 today + 1 archived 5 days ago; the one of 10 days ago is outside the window
        ("welcome", 4, 3, 0, 1, 0, 0.75),
    ]


def _build_delivery_window(resources, as_of: datetime) -> bool:
    return dg.materialize(
        [analytics_dbt_models],
        selection=[dg.AssetKey(["analytics", "template_delivery_7d"])],
        resources={"dbt": dbt_resource(), "warehouse": resources["warehouse"]},
        run_config={"ops": {"analytics_dbt_models": {"config": {"as_of": as_of.isoformat()}}}},
    ).success


def test_template_delivery_7d_ends_its_window_at_the_builds_as_of_moment(built, db, resources):
    """Built as of yesterday's rows: today's notifications are after "now", and the window
    starts a day earlier (both edge rows in, the one of 10 days ago still out)."""
    tenant, facts, _ = built
    yesterday_noon = datetime.combine(facts["yesterday"], datetime.min.time(), UTC) + timedelta(
        hours=12
    )
    try:
        assert _build_delivery_window(
            resources, max(yesterday_noon, facts["now"] - timedelta(days=1))
        )
        rows = _rows(
            db,
            "select template_id, sent, delivered, temporary_failures, in_flight"
            " from analytics.template_delivery_7d where tenant_id = %s order by template_id",
            tenant,
        )
        assert [tuple(r.values()) for r in rows] == [
            ("edge", 2, 2, 0, 0),
            ("reply", 1, 0, 1, 0),
            ("welcome", 1, 1, 0, 0),  # the archived one of 5 days ago
        ]
    finally:
        assert _build_delivery_window(resources, facts["now"])


def test_fct_notifications(built, db):
    tenant, _, _ = built
    rows = {
        r["notification_id"].removeprefix(f"{tenant}-"): r
        for r in _rows(db, "select * from analytics.fct_notifications where tenant_id = %s", tenant)
    }
    assert set(rows) == {"n1", "n2", "n3", "n4", "n5", "n6", "e1", "e2", "h1"}
    assert rows["n3"]["failure_reason"] == "mailbox does not exist"
    assert rows["n3"]["is_failed"] and rows["n3"]["delivery_event_count"] == 1
    assert rows["h1"]["is_archived"] and not rows["n1"]["is_archived"]
    assert "recipient" not in rows["n1"]


def test_agg_feedback_daily(built, db):
    tenant, facts, _ = built
    rows = _rows(
        db,
        "select feedback_day, source, items, positive, neutral, negative, languages"
        " from analytics.agg_feedback_daily where tenant_id = %s order by feedback_day",
        tenant,
    )
    assert [tuple(r.values()) for r in rows] == [
        (facts["yesterday"], "webhook", 1, 0, 1, 0, 1),
        (facts["today"], "webhook", 2, 1, 0, 1, 2),
    ]


# --- per-tenant row-level security on the marts (migration 0501, dbt post-hook) ---------------

MARTS_WITH_TENANTS = (
    "fct_tickets",
    "fct_ticket_comments",
    "agg_activity_daily",
    "fct_notifications",
    "template_delivery_7d",
    "agg_feedback_daily",
)


def _tenants_seen(conn, table: str, tenants: tuple[str, ...]) -> set[str]:
    from psycopg import sql

    query = sql.SQL("select distinct tenant_id from analytics.{} where tenant_id = any(%s)")
    return {r[0] for r in conn.execute(query.format(sql.Identifier(table)), (list(tenants),))}


@pytest.mark.parametrize("table", MARTS_WITH_TENANTS)
def test_tenant_analyst_sees_only_its_tenants_rows(built, db, db_url, tenant_analyst_login, table):
    import psycopg

    tenant, facts, _ = built
    both = (tenant, facts["other_tenant"])
    with psycopg.connect(db_url, user=tenant_analyst_login, autocommit=True) as conn:
        assert _tenants_seen(conn, table, both) == set()  # no tenant granted yet
        db.execute(
            "insert into control.analyst_tenants (role_name, tenant_id) values (%s, %s)",
            (tenant_analyst_login, tenant),
        )
        assert _tenants_seen(conn, table, both) == {tenant}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from raw.zendesk_tickets")


def test_full_analyst_sees_every_tenant_of_the_marts(built, analyst_conn):
    tenant, facts, _ = built
    both = (tenant, facts["other_tenant"])
    for table in MARTS_WITH_TENANTS:
        assert _tenants_seen(analyst_conn, table, both) == set(both)


def test_allowed_tenants_answers_only_for_the_session_user(db, db_url, tenant_analyst_login):
    import psycopg

    db.execute(
        "insert into control.analyst_tenants (role_name, tenant_id) values ('someone_else', 'x')"
    )
    try:
        with psycopg.connect(db_url, user=tenant_analyst_login, autocommit=True) as conn:
            assert conn.execute("select * from analytics.allowed_tenants()").fetchall() == []
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select * from control.analyst_tenants")
    finally:
        db.execute("delete from control.analyst_tenants where role_name = 'someone_else'")


# --- the manifest: dagster-dbt prepares it (assets/analytics/project.py, Makefile) ---------------

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROJECT_FILE = "assets/analytics/project.py"


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory) -> Path:
    """What a fresh clone holds for the analytics layer: the Makefile, assets/analytics/project.py
    and dbt_project/ without target/, brought up by `make setup`'s manifest step (the venv is
    this one, taken as installed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    checkout = tmp_path_factory.mktemp("checkout")
    shutil.copy2(REPO / "Makefile", checkout / "Makefile")
    (checkout / PROJECT_FILE).parent.mkdir(parents=True)
    shutil.copy2(REPO / PROJECT_FILE, checkout / PROJECT_FILE)
    shutil.copytree(
        REPO / "dbt_project",
        checkout / "dbt_project",
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"),
    )
    assert not (checkout / "dbt_project" / "target").exists()
    made = _make(checkout, "setup")
    assert made.returncode == 0, made.stdout[-3000:]
    assert "dagster-dbt project prepare-and-package" in made.stdout
    return checkout


def _make(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    venv = VENV_BIN.parent
    return subprocess.run(
        ["make", "-C", str(checkout), f"VENV={venv}", "-o", f"{venv}/.installed", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _manifest_nodes(checkout: Path) -> dict:
    return json.loads((checkout / "dbt_project" / "target" / "manifest.json").read_text())["nodes"]


def test_a_fresh_checkout_gets_a_manifest_from_make_and_loads(fresh_checkout: Path):
    from dagster_dbt import DbtProject, dbt_assets

    from assets.analytics.defs import dbt_translator

    assert "model.supportflow.fct_tickets" in _manifest_nodes(fresh_checkout)
    project = DbtProject(project_dir=fresh_checkout / "dbt_project")

    @dbt_assets(
        manifest=project.manifest_path, project=project, dagster_dbt_translator=dbt_translator
    )
    def loaded(context): ...

    assert dg.AssetKey(["analytics", "fct_tickets"]) in loaded.keys
    # nothing changed since: make leaves the manifest alone ...
    assert _make(fresh_checkout, "-q", "setup").returncode == 0
    # ... and prepares again once a model is edited
    model = fresh_checkout / "dbt_project" / "models" / "marts" / "fct_tickets.sql"
    later = (fresh_checkout / "dbt_project" / "target" / "manifest.json").stat().st_mtime + 5
    os.utime(model, (later, later))
    assert _make(fresh_checkout, "-q", "setup").returncode == 1


def test_dagster_dev_prepares_again_at_load_and_a_deployment_does_not(fresh_checkout: Path):
    """`make dev` runs `dagster dev` (DAGSTER_IS_DEV_CLI set): loading the code location parses
    the project again, so a new model shows after a reload. Elsewhere the manifest is only read."""
    probe = fresh_checkout / "dbt_project" / "models" / "marts" / "probe_new_model.sql"
    probe.write_text("select 1 as one\n")
    load = [sys.executable, "-c", f"import runpy; runpy.run_path({PROJECT_FILE!r})"]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_IS_DEV_CLI"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # as `supportflow dev` does
    deployed = subprocess.run(load, cwd=fresh_checkout, env=env, capture_output=True, text=True)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "model.supportflow.probe_new_model" not in _manifest_nodes(fresh_checkout)
    dev = subprocess.run(
        load,
        cwd=fresh_checkout,
        env={**env, "DAGSTER_IS_DEV_CLI": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert dev.returncode == 0, dev.stderr[-3000:]
    assert "model.supportflow.probe_new_model" in _manifest_nodes(fresh_checkout)


def test_tenant_analyst_row_security_on_the_pipelines_analytics_tables(
    built, db, db_url, tenant_analyst_login
):
    """template_stats_daily is written by the email pipeline, not dbt: migration 0501 gave it
    the same policies."""
    import psycopg

    tenant, facts, _ = built
    both = (tenant, facts["other_tenant"])
    for t in both:
        db.execute(
            "insert into analytics.template_stats_daily (day, tenant_id, template_id, status,"
            " notification_count) values (current_date, %s, 'rls', 'delivered', 1)",
            (t,),
        )
    db.execute(
        "insert into control.analyst_tenants (role_name, tenant_id) values (%s, %s)",
        (tenant_analyst_login, facts["other_tenant"]),
    )
    try:
        with psycopg.connect(db_url, user=tenant_analyst_login, autocommit=True) as conn:
            seen = _tenants_seen(conn, "template_stats_daily", both)
        assert seen == {facts["other_tenant"]}
    finally:
        db.execute(
            "delete from analytics.template_stats_daily where tenant_id = any(%s)", (list(both),)
        )
