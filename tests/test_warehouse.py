"""The warehouse: embedded server, migrations under a lock, secrets."""

from __future__ import annotations

import multiprocessing
import os
import stat
import uuid

import psycopg
import pytest

from resources.secrets import SecretBox, SecretError, load_or_create_key
from resources.warehouse import (
    ensure_database,
    migrate,
    migration_files,
    with_database,
)


def test_schemas_exist_and_migrations_recorded(db):
    schemas = {r[0] for r in db.execute("select nspname from pg_namespace")}
    assert {"control", "raw", "analytics"} <= schemas
    recorded = [r[0] for r in db.execute("select version from control.schema_migrations")]
    assert sorted(recorded) == sorted(v for v, _ in migration_files())


def test_rerunning_migrations_applies_nothing(db_url):
    assert migrate(db_url) == []


def _migrate_in_process(url: str, results) -> None:
    results.put(migrate(url))


def test_two_processes_migrating_at_once_apply_each_migration_once(db_url):
    url = with_database(db_url, f"migrate_{uuid.uuid4().hex[:8]}")
    ensure_database(db_url, psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_migrate_in_process, args=(url, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    applied = [results.get(timeout=5) for _ in procs]
    every = [v for v, _ in migration_files()]
    # one process applied everything, the other waited on the lock and found nothing to do
    assert sorted(applied, key=len) == [[], every]
    with psycopg.connect(url) as conn:
        rows = conn.execute("select version, count(*) from control.schema_migrations group by 1")
        assert {v: n for v, n in rows} == dict.fromkeys(every, 1)


def test_secret_key_file_is_created_once_with_mode_0600(tmp_path):
    key = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == key
    mode = stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode)
    assert mode == 0o600
    box = SecretBox(key)
    token = box.encrypt("zendesk-api-token")
    assert b"zendesk-api-token" not in token
    assert box.decrypt(token) == "zendesk-api-token"
    with pytest.raises(SecretError, match="secret key changed"):
        SecretBox(load_or_create_key(tmp_path / "other")).decrypt(token)
