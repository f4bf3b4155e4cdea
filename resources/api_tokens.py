"""Per-tenant tokens of the helpdesk read API (`control.api_tokens`).

A token is 256 random bits, shown once; only its SHA-256 hash is stored, so the table leaks
nothing usable. A token resolves to its tenant; every API query is then bound to that tenant.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg

TOKEN_PREFIX = "sfapi_"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ApiTokenError(ValueError):
    """A token request that cannot be honoured (bad name, duplicate, unknown token)."""


@dataclass(frozen=True)
class ApiToken:
    token_id: int
    tenant_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_api_token(conn: psycopg.Connection, tenant_id: str, name: str) -> str:
    """Make a token for `tenant_id`; returns the plaintext, which is never stored."""
    if not TOKEN_NAME.match(name):
        raise ApiTokenError(f"token name {name!r}: letters, digits, '.', '_' or '-' (max 64)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        conn.execute(
            "insert into control.api_tokens (tenant_id, name, token_hash) values (%s, %s, %s)",
            (tenant_id, name, hash_api_token(token)),
        )
    except psycopg.errors.UniqueViolation:
        raise ApiTokenError(f"tenant {tenant_id} already has a token named {name!r}") from None
    return token


def list_api_tokens(conn: psycopg.Connection, tenant_id: str | None = None) -> list[ApiToken]:
    rows = conn.execute(
        "select token_id, tenant_id, name, created_at, last_used_at, revoked_at "
        "from control.api_tokens where %(tenant)s::text is null or tenant_id = %(tenant)s "
        "order by tenant_id, name",
        {"tenant": tenant_id},
    ).fetchall()
    return [ApiToken(*row) for row in rows]


def revoke_api_token(conn: psycopg.Connection, tenant_id: str, name: str) -> None:
    updated = conn.execute(
        "update control.api_tokens set revoked_at = coalesce(revoked_at, now()) "
        "where tenant_id = %s and name = %s",
        (tenant_id, name),
    ).rowcount
    if not updated:
        raise ApiTokenError(f"tenant {tenant_id} has no token named {name!r}")


def tenant_for_token(conn: psycopg.Connection, token: str) -> str | None:
    """The tenant of a valid, unrevoked token; None otherwise. Looked up by hash, so the
    comparison never touches the plaintext of another token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    row = conn.execute(
        "update control.api_tokens set last_used_at = now() "
        "where token_hash = %s and revoked_at is null returning tenant_id",
        (hash_api_token(token),),
    ).fetchone()
    return row[0] if row else None
