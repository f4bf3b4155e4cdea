"""`supportflow activities TENANT TICKET_ID`: print a ticket's activity timeline."""

from __future__ import annotations

import json

import click

from orchestration.commands import UserError, load_settings, require_known_tenant


def register(cli: click.Group) -> None:
    @cli.command("activities")
    @click.argument("tenant")
    @click.argument("ticket_id")
    @click.option("--json", "as_json", is_flag=True, help="one JSON object a line")
    def activities(tenant: str, ticket_id: str, as_json: bool) -> None:
        """Print the timeline of TICKET_ID of TENANT: user and system activities, oldest first."""
        from assets.activities.rules import TENANT_ID_RE, InvalidActivity, parse_ticket_id
        from assets.activities.store import ticket_timeline
        from resources.runtime import warehouse_url
        from resources.warehouse import get_pool

        if not TENANT_ID_RE.match(tenant):
            raise UserError(f"TENANT: not a valid tenant id: {tenant!r}")
        try:
            ticket = parse_ticket_id(ticket_id)
        except InvalidActivity as exc:
            raise UserError(f"TICKET_ID: {str(exc).removeprefix('ticket_id: ')}") from exc
        url = warehouse_url(load_settings())
        with get_pool(url).connection() as conn:
            require_known_tenant(conn, tenant)
            entries = ticket_timeline(conn, tenant, ticket)
        if as_json:
            for entry in entries:
                record = {
                    "occurred_at": entry.occurred_at.isoformat(),
                    "activity_id": entry.activity_id,
                    "actor_type": entry.actor_type,
                    "actor_id": entry.actor_id,
                    "action": entry.action,
                    "category": entry.category,
                    "details": entry.details,
                }
                click.echo(json.dumps(record, ensure_ascii=False))
            return
        click.echo(f"ticket {ticket} of tenant {tenant}: {len(entries)} activities")
        for entry in entries:
            click.echo(entry.describe())
