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


def test_two_processes_starting_the_embedded_server_at_once_share_it():
    """The UI, the daemon and the CLI may all start on a fresh machine at the same moment."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    # not under tmp_path: pytest resets /tmp/pytest-of-<user> to mode 0700, which locks out the
    # unprivileged user the embedded server runs as when the tests run as root
    home = Path(tempfile.mkdtemp(prefix="sf-fresh-home-"))
    env = {**os.environ, "SUPPORTFLOW_HOME": str(home)}
    env.pop("SUPPORTFLOW_DATABASE_URL", None)
    command = [sys.executable, "-m", "orchestration.cli", "db", "url"]
    try:
        procs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        results = [proc.communicate(timeout=120) for proc in procs]
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err.decode()
        urls = {out.decode().strip() for out, _ in results}
        assert len(urls) == 1
        [url] = urls
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "select version, count(*) from control.schema_migrations group by 1"
            )
            assert {v: n for v, n in rows} == dict.fromkeys((v for v, _ in migration_files()), 1)
    finally:
        stop = subprocess.run([*command[:-1], "stop"], env=env, capture_output=True, text=True)
        shutil.rmtree(home, ignore_errors=True)
        assert stop.stdout.strip() == "stopped", stop.stderr
