"""The read-only analyst role: reads analytics, also tables created later; nothing else."""

from __future__ import annotations

import psycopg
import pytest


def test_analyst_role_is_nologin(db):
    row = db.execute(
        "select rolcanlogin, rolsuper, rolcreatedb, rolcreaterole from pg_roles"
        " where rolname = 'supportflow_analyst'"
    ).fetchone()
    assert row == (False, False, False, False)


def test_analyst_reads_analytics_including_tables_created_later(db, analyst_conn):
    # a table created after the migration, as dbt does on every build
    db.execute("drop table if exists analytics.role_probe")
    db.execute("create table analytics.role_probe as select 1 as answer")
    try:
        assert analyst_conn.execute("select answer from analytics.role_probe").fetchone() == (1,)
        analyst_conn.execute("select count(*) from analytics.template_stats_daily").fetchone()
    finally:
        db.execute("drop table analytics.role_probe")


@pytest.mark.parametrize(
    "statement",
    [
        "select count(*) from raw.notifications",
        "select count(*) from raw.activities",
        "select count(*) from control.queue_messages",
        "select count(*) from control.schema_migrations",
    ],
)
def test_analyst_cannot_read_raw_or_control(analyst_conn, statement):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        analyst_conn.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "insert into analytics.template_stats_daily (day, tenant_id, template_id, status,"
        " notification_count) values (current_date, 't', 'x', 'delivered', 1)",
        "update analytics.template_stats_daily set notification_count = 0",
        "delete from analytics.template_stats_daily",
        "truncate analytics.template_stats_daily",
        "create table analytics.analyst_scratch (x int)",
        "create schema analyst_scratch",
    ],
)
def test_analyst_cannot_write(analyst_conn, statement):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        analyst_conn.execute(statement)
