"""Email delivery commands: `supportflow stats templates TENANT [--days N]` (the dashboard's
per-template counts for the last N whole days plus today) and `supportflow email pod|retention`
(the tenant's pod for event routing, its retention override)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from orchestration.commands import UserError, load_settings, require_known_tenant


def _tenant(value: str) -> str:
    from assets.activities.rules import TENANT_ID_RE

    if not TENANT_ID_RE.match(value):
        raise UserError(f"TENANT: not a valid tenant id: {value!r}")
    return value


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise UserError(f"--as-of: expected an ISO 8601 timestamp with an offset: {value!r}")
    return moment


def _connection():
    from resources.runtime import warehouse_url
    from resources.warehouse import get_pool

    return get_pool(warehouse_url(load_settings())).connection()


def register(cli: click.Group) -> None:
    stats = cli.commands.get("stats")
    if not isinstance(stats, click.Group):

        @cli.group("stats")
        def stats() -> None:
            """Statistics for dashboards."""

    @stats.command("templates")
    @click.argument("tenant")
    @click.option(
        "--days",
        default=7,
        show_default=True,
        type=click.IntRange(0, 7),
        help="whole days before today (0..7)",
    )
    @click.option("--json", "as_json", is_flag=True, help="one JSON object a line")
    @click.option(
        "--as-of",
        "as_of",
        default=None,
        metavar="TIMESTAMP",
        help="the moment 'today' is taken from, ISO 8601 with an offset (default: now)",
    )
    def templates(tenant: str, days: int, as_json: bool, as_of: str | None) -> None:
        """Notifications per template and status: the last N whole days plus today (live)."""
        from zoneinfo import ZoneInfo

        from assets.email.store import template_stats

        tenant = _tenant(tenant)
        now = _moment(as_of) if as_of else datetime.now(UTC)
        zone = ZoneInfo(load_settings().email_timezone)
        with _connection() as conn:
            require_known_tenant(conn, tenant)
            rows = template_stats(conn, tenant, days, zone, now)
        # one write: a tenant's week is a thousand lines or more, and click.echo per line costs
        # more than the query
        if as_json:
            lines = [
                json.dumps(
                    {
                        "day": row.day.isoformat(),
                        "template_id": row.template_id,
                        "status": row.status,
                        "notification_count": row.notification_count,
                    }
                )
                for row in rows
            ]
            if lines:
                click.echo("\n".join(lines))
            return
        totals: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row.template_id, row.status)
            totals[key] = totals.get(key, 0) + row.notification_count
        lines = [
            f"tenant {tenant}: last {days} day(s) plus today ({zone.key})",
            f"{'template':<24}{'status':<20}{'notifications':>14}",
            *(
                f"{template:<24}{status:<20}{count:>14}"
                for (template, status), count in sorted(totals.items())
            ),
        ]
        click.echo("\n".join(lines))

    @cli.group("email")
    def email() -> None:
        """Email delivery settings per tenant."""

    @email.command("pod")
    @click.argument("tenant")
    @click.argument("pod")
    def pod(tenant: str, pod: str) -> None:
        """Route TENANT's delivery events to queue email_events.POD."""
        from assets.email.store import set_tenant_pod

        tenant = _tenant(tenant)
        if not pod.replace("-", "").isalnum():
            raise UserError(f"POD: letters, digits and '-' only: {pod!r}")
        with _connection() as conn:
            set_tenant_pod(conn, tenant, pod)
        click.echo(f"tenant {tenant} -> email_events.{pod}")

    @email.command("retention")
    @click.argument("tenant")
    @click.argument("days", type=click.IntRange(1, 3650))
    def retention(tenant: str, days: int) -> None:
        """Keep TENANT's notifications DAYS full days (instead of 7)."""
        from assets.email.store import set_retention_days

        tenant = _tenant(tenant)
        with _connection() as conn:
            set_retention_days(conn, tenant, days)
        click.echo(f"tenant {tenant}: notifications kept {days} full days")
