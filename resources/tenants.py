"""Whether a tenant is known here: the platform has no tenant registry, a tenant exists by its
configuration (a desk, a feedback workspace, an origin, email settings, an API token) or its data.

Only tables whose primary key or an index starts with `tenant_id` (or small control tables) are
asked, so the answer costs an index probe per table however much data there is.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

TENANT_TABLES = (
    "control.desks",
    "control.workspaces",
    "control.origins",
    "control.email_tenant_pods",
    "control.notification_retention",
    "control.api_tokens",
    "raw.zendesk_tickets",
    "raw.activities",
    "raw.notifications",
    "raw.notification_history",
    "analytics.template_stats_daily",
    "raw.conversation_messages",
)


def tenant_is_known(conn: psycopg.Connection, tenant: str) -> bool:
    """True when any of `TENANT_TABLES` (those that exist) has a row of `tenant`."""
    existing = [
        name
        for name, exists in conn.execute(
            "select name, to_regclass(name) is not null from unnest(%s::text[]) as name",
            (list(TENANT_TABLES),),
        )
        if exists
    ]
    if not existing:
        return False
    probes = sql.SQL(" or ").join(
        sql.SQL("exists (select 1 from {} where tenant_id = %(tenant)s)").format(
            sql.Identifier(*name.split("."))
        )
        for name in existing
    )
    row = conn.execute(sql.SQL("select {}").format(probes), {"tenant": tenant}).fetchone()
    return bool(row[0])
