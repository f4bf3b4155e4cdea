"""The desk registry (`control.desks`): Zendesk accounts supportflow keeps in sync.

Tokens are stored encrypted with `SecretBox`; `Desk` never holds plaintext. A desk's name is
also its Dagster partition key, so names are short lowercase slugs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from resources.secrets import SecretBox
from resources.zendesk import Credentials, ZendeskApi, ZendeskClient, default_base_url

DESK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SUBDOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class DeskError(ValueError):
    """A desk request that cannot be honoured (bad name, unknown desk, duplicate)."""


@dataclass(frozen=True)
class Desk:
    desk_id: int
    name: str
    tenant_id: str
    subdomain: str
    base_url: str
    auth_kind: str
    auth_email: str | None
    token_encrypted: bytes
    active: bool
    sync_interval_seconds: int
    export_rate_per_minute: int
    api_rate_per_minute: int
    ticket_cursor: str | None
    events_cursor: int | None
    last_synced_at: datetime | None
    last_sync_error: str | None

    def __repr__(self) -> str:  # the encrypted token stays out of logs too
        return f"Desk(desk_id={self.desk_id}, name={self.name!r}, tenant_id={self.tenant_id!r})"

    def credentials(self, box: SecretBox) -> Credentials:
        return Credentials(
            kind=self.auth_kind, secret=box.decrypt(self.token_encrypted), email=self.auth_email
        )


_COLUMNS = (
    "desk_id, name, tenant_id, subdomain, base_url, auth_kind, auth_email, token_encrypted, "
    "active, sync_interval_seconds, export_rate_per_minute, api_rate_per_minute, "
    "ticket_cursor, events_cursor, last_synced_at, last_sync_error"
)


def _desk(row: dict) -> Desk:
    return Desk(**{**row, "token_encrypted": bytes(row["token_encrypted"])})


def validate_desk_name(name: str) -> str:
    if not DESK_NAME.match(name or ""):
        raise DeskError(
            f"desk name {name!r} must be 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def add_desk(
    conn: psycopg.Connection,
    box: SecretBox,
    *,
    name: str,
    subdomain: str,
    token: str,
    email: str | None = None,
    oauth: bool = False,
    base_url: str | None = None,
    tenant_id: str | None = None,
    sync_interval_seconds: int = 300,
    export_rate_per_minute: int = 10,
    api_rate_per_minute: int = 200,
) -> Desk:
    """Register a desk; the token is encrypted before it reaches the database."""
    validate_desk_name(name)
    if not SUBDOMAIN.match(subdomain or ""):
        raise DeskError(f"subdomain {subdomain!r} is not a Zendesk subdomain (like 'acme')")
    if not token:
        raise DeskError("the token is empty")
    if not oauth and not email:
        raise DeskError("an API token needs --email (or use --oauth-token-env)")
    if base_url is not None:
        base_url = _check_base_url(base_url)
    for label, value in (
        ("sync interval", sync_interval_seconds),
        ("export rate", export_rate_per_minute),
        ("API rate", api_rate_per_minute),
    ):
        if value <= 0:
            raise DeskError(f"{label} must be positive, not {value}")
    try:
        row = conn.execute(
            f"""
            insert into control.desks (name, tenant_id, subdomain, base_url, auth_kind,
                auth_email, token_encrypted, sync_interval_seconds, export_rate_per_minute,
                api_rate_per_minute)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            returning {_COLUMNS}
            """,  # noqa: S608 - constant column list
            (
                name,
                tenant_id or name,
                subdomain,
                (base_url or default_base_url(subdomain)).rstrip("/"),
                "oauth" if oauth else "token",
                None if oauth else email,
                box.encrypt(token),
                sync_interval_seconds,
                export_rate_per_minute,
                api_rate_per_minute,
            ),
        ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise DeskError(f"a desk named {name!r} already exists") from exc
    columns = [c.strip() for c in _COLUMNS.split(",")]
    return _desk(dict(zip(columns, row, strict=True)))


def list_desks(conn: psycopg.Connection, *, active_only: bool = False) -> list[Desk]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"select {_COLUMNS} from control.desks"  # noqa: S608 - constant column list
            + (" where active" if active_only else "")
            + " order by name"
        )
        return [_desk(row) for row in cur.fetchall()]


def get_desk(conn: psycopg.Connection, name: str) -> Desk:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"select {_COLUMNS} from control.desks where name = %s",  # noqa: S608
            (name,),
        )
        row = cur.fetchone()
    if row is None:
        raise _unknown(name)
    return _desk(row)


def _unknown(name: str) -> DeskError:
    return DeskError(f"no desk named {name!r} (see `supportflow desks list`)")


def set_desk_active(conn: psycopg.Connection, name: str, active: bool) -> None:
    """Pause (the data stays) or resume syncing a desk."""
    updated = conn.execute(
        "update control.desks set active = %s, updated_at = now() where name = %s", (active, name)
    ).rowcount
    if not updated:
        raise _unknown(name)


def disable_desk(conn: psycopg.Connection, name: str) -> None:
    set_desk_active(conn, name, False)


def _check_base_url(base_url: str) -> str:
    if not re.match(r"^https?://[^\s/]+", base_url):
        raise DeskError(f"base URL {base_url!r} must start with http:// or https://")
    return base_url.rstrip("/")


def update_desk(
    conn: psycopg.Connection,
    box: SecretBox,
    name: str,
    *,
    token: str | None = None,
    oauth: bool | None = None,
    email: str | None = None,
    base_url: str | None = None,
    sync_interval_seconds: int | None = None,
    export_rate_per_minute: int | None = None,
    api_rate_per_minute: int | None = None,
) -> Desk:
    """Change what is given, nothing else; a new token is encrypted before it is stored.

    `oauth` says which kind `token` is (True: OAuth; False: API token, which needs an email,
    given now or stored). The running sync reads the desk at its start, so a rotated token is
    used from the next run on, queued runs included.
    """
    desk = get_desk(conn, name)
    changes: dict[str, object] = {}
    if token is not None:
        if not token:
            raise DeskError("the token is empty")
        kind = "oauth" if oauth else "token"
        auth_email = email or (desk.auth_email if desk.auth_kind == "token" else None)
        if kind == "token" and not auth_email:
            raise DeskError("an API token needs --email (or use --oauth-token-env)")
        changes |= {
            "auth_kind": kind,
            "auth_email": None if kind == "oauth" else auth_email,
            "token_encrypted": box.encrypt(token),
        }
    elif email is not None:
        if desk.auth_kind != "token":
            raise DeskError("--email goes with API-token auth; this desk uses OAuth")
        changes["auth_email"] = email
    if base_url is not None:
        changes["base_url"] = _check_base_url(base_url)
    for column, label, value in (
        ("sync_interval_seconds", "sync interval", sync_interval_seconds),
        ("export_rate_per_minute", "export rate", export_rate_per_minute),
        ("api_rate_per_minute", "API rate", api_rate_per_minute),
    ):
        if value is not None:
            if value <= 0:
                raise DeskError(f"{label} must be positive, not {value}")
            changes[column] = value
    if not changes:
        raise DeskError("nothing to update: give at least one option")
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
        for column in changes
    )
    conn.execute(
        sql.SQL("update control.desks set {}, updated_at = now() where desk_id = {}").format(
            assignments, sql.Placeholder("desk_id")
        ),
        {**changes, "desk_id": desk.desk_id},
    )
    return get_desk(conn, name)


def resync_desk(conn: psycopg.Connection, name: str) -> Desk:
    """Forget the desk's cursors: its next sync reads both exports from the beginning.

    Rows are upserted (a newer version wins, nothing twice) and tickets deleted meanwhile come
    back from the export with status `deleted` and are marked, so the desk converges to exactly
    what Zendesk holds. A sync running now finds its cursor moved and stops at its next page.
    """
    updated = conn.execute(
        "update control.desks set ticket_cursor = null, events_cursor = null, "
        "comments_split_at = null, comments_backfill_after = null, comments_gap_from = null, "
        "updated_at = now() where name = %s",
        (name,),
    ).rowcount
    if not updated:
        raise _unknown(name)
    return get_desk(conn, name)


def desk_row_counts(conn: psycopg.Connection, desk_id: int) -> dict[str, int]:
    """Rows the desk holds in every table with a `desk_id` (besides control.desks itself)."""
    tables = conn.execute(
        """
        select c.table_schema, c.table_name from information_schema.columns c
        join information_schema.tables t using (table_schema, table_name)
        where c.column_name = 'desk_id' and t.table_type = 'BASE TABLE'
          and c.table_schema in ('raw', 'control', 'analytics')
          and (c.table_schema, c.table_name) <> ('control', 'desks')
        order by 1, 2
        """
    ).fetchall()
    counts = {}
    for schema, table in tables:
        (count,) = conn.execute(
            sql.SQL("select count(*) from {} where desk_id = %s").format(
                sql.Identifier(schema, table)
            ),
            (desk_id,),
        ).fetchone()
        counts[f"{schema}.{table}"] = count
    return counts


def remove_desk(conn: psycopg.Connection, name: str, *, purge: bool = False) -> dict[str, int]:
    """Remove the desk. Without `purge` only a desk holding no rows can go (disable it to keep
    its data); with `purge` its rows in every table go too. Runs in the caller's transaction, so
    either everything goes or nothing does. Returns the rows deleted per table."""
    desk = get_desk(conn, name)
    conn.execute("select 1 from control.desks where desk_id = %s for update", (desk.desk_id,))
    counts = desk_row_counts(conn, desk.desk_id)
    held = sum(counts.values())
    if held and not purge:
        raise DeskError(
            f"desk {name!r} still holds {held} rows; `desks disable {name}` keeps them, "
            f"`desks remove {name} --purge` deletes them"
        )
    deleted = {}
    for table in counts:
        schema, _, relation = table.partition(".")
        deleted[table] = conn.execute(
            sql.SQL("delete from {} where desk_id = %s").format(sql.Identifier(schema, relation)),
            (desk.desk_id,),
        ).rowcount
    conn.execute("delete from control.desks where desk_id = %s", (desk.desk_id,))
    return deleted


def record_sync_result(conn: psycopg.Connection, desk_id: int, error: str | None) -> None:
    """A finished sync moves last_synced_at; a failed one keeps it and records the error."""
    if error is None:
        conn.execute(
            "update control.desks set last_synced_at = now(), last_sync_error = null, "
            "updated_at = now() where desk_id = %s",
            (desk_id,),
        )
    else:
        conn.execute(
            "update control.desks set last_sync_error = %s, updated_at = now() where desk_id = %s",
            (error[:1000], desk_id),
        )


def open_desk_api(zendesk: ZendeskClient, desk: Desk) -> ZendeskApi:
    """An API session for `desk`, its token decrypted only into the session's headers."""
    return zendesk.open(
        desk=desk.name,
        base_url=desk.base_url,
        credentials=desk.credentials(zendesk.secret_box()),
        export_rate_per_minute=desk.export_rate_per_minute,
        api_rate_per_minute=desk.api_rate_per_minute,
    )
