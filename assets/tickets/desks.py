"""The desk registry (`control.desks`): Zendesk accounts supportflow keeps in sync.

Tokens are stored encrypted with `SecretBox`; `Desk` never holds plaintext. A desk's name is
also its Dagster partition key, so names are short lowercase slugs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import psycopg
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
    if base_url is not None and not re.match(r"^https?://[^\s/]+", base_url):
        raise DeskError(f"base URL {base_url!r} must start with http:// or https://")
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
        raise DeskError(f"no desk named {name!r} (see `supportflow desks list`)")
    return _desk(row)


def disable_desk(conn: psycopg.Connection, name: str) -> None:
    updated = conn.execute(
        "update control.desks set active = false, updated_at = now() where name = %s", (name,)
    ).rowcount
    if not updated:
        raise DeskError(f"no desk named {name!r} (see `supportflow desks list`)")


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
