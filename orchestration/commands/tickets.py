"""`supportflow desks add|list|update|disable|enable|resync|remove|repair-comments` and
`supportflow sync NAME`: a desk's whole life without SQL.

Tokens are read from the environment variable the user names and stored encrypted; they are
never printed. `sync` materializes a desk's tickets, users and comments in this process, recorded
in the platform's Dagster instance (it shows in the UI), and prints the counts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import click

from orchestration.commands import UserError, load_settings


def _token_from_env(variable: str) -> str:
    value = os.environ.get(variable, "")
    if not value.strip():
        raise UserError(
            f"environment variable {variable} is not set or empty (it must hold the token)"
        )
    return value.strip()


@contextlib.contextmanager
def _connection(settings) -> Iterator:
    """One transaction on the warehouse: committed when the block ends cleanly."""
    from resources.runtime import warehouse_url
    from resources.warehouse import get_pool

    with get_pool(warehouse_url(settings)).connection() as conn:
        yield conn


def _set_active(name: str, active: bool) -> None:
    from assets.tickets.desks import DeskError, set_desk_active

    try:
        with _connection(load_settings()) as conn:
            set_desk_active(conn, name, active)
    except DeskError as exc:
        raise UserError(str(exc)) from None


def register(cli: click.Group) -> None:
    @cli.group()
    def desks() -> None:
        """Zendesk accounts ("desks") supportflow keeps in sync."""

    @desks.command("add")
    @click.argument("name")
    @click.option("--subdomain", required=True, help="the Zendesk subdomain (acme.zendesk.com)")
    @click.option("--base-url", default=None, help="API base URL (a proxy or the sandbox)")
    @click.option("--email", default=None, help="agent email for API-token auth")
    @click.option("--token-env", default=None, metavar="VAR", help="env var holding the API token")
    @click.option(
        "--oauth-token-env", default=None, metavar="VAR", help="env var holding an OAuth token"
    )
    @click.option("--tenant", default=None, help="tenant id for the desk's rows (default: NAME)")
    @click.option("--sync-interval", default=300, show_default=True, type=click.IntRange(1))
    @click.option(
        "--export-rate",
        default=10,
        show_default=True,
        type=click.IntRange(1),
        help="incremental export requests/minute of the plan (30 with High Volume)",
    )
    @click.option(
        "--api-rate",
        default=200,
        show_default=True,
        type=click.IntRange(1),
        help="other API requests/minute of the plan (200 to 2500)",
    )
    def desks_add(
        name: str,
        subdomain: str,
        base_url: str | None,
        email: str | None,
        token_env: str | None,
        oauth_token_env: str | None,
        tenant: str | None,
        sync_interval: int,
        export_rate: int,
        api_rate: int,
    ) -> None:
        """Register desk NAME; the token is read from the named variable and stored encrypted."""
        from assets.tickets.desks import DeskError, add_desk
        from resources.runtime import warehouse_url
        from resources.secrets import SecretBox, SecretError
        from resources.warehouse import get_pool

        if bool(token_env) == bool(oauth_token_env):
            raise UserError("give exactly one of --token-env (with --email) or --oauth-token-env")
        if token_env and not email:
            raise UserError("--token-env needs --email (API tokens authenticate as an agent)")
        token = _token_from_env(token_env or oauth_token_env or "")
        settings = load_settings()
        try:
            box = SecretBox.from_settings(settings.secret_key, settings.home)
            with get_pool(warehouse_url(settings)).connection() as conn:
                desk = add_desk(
                    conn,
                    box,
                    name=name,
                    subdomain=subdomain,
                    token=token,
                    email=email,
                    oauth=bool(oauth_token_env),
                    base_url=base_url,
                    tenant_id=tenant,
                    sync_interval_seconds=sync_interval,
                    export_rate_per_minute=export_rate,
                    api_rate_per_minute=api_rate,
                )
        except (DeskError, SecretError) as exc:
            raise UserError(str(exc)) from None
        click.echo(
            f"added desk {desk.name} ({desk.base_url}, {desk.auth_kind} auth, "
            f"tenant {desk.tenant_id}, every {desk.sync_interval_seconds} s)"
        )

    @desks.command("list")
    def desks_list() -> None:
        """Desks with their state and last sync."""
        from assets.tickets.desks import list_desks
        from resources.runtime import warehouse_url
        from resources.warehouse import get_pool

        with get_pool(warehouse_url(load_settings())).connection() as conn:
            rows = list_desks(conn)
            counts = dict(
                conn.execute(
                    "select desk_id, count(*) from raw.zendesk_tickets group by desk_id"
                ).fetchall()
            )
        click.echo(
            f"{'name':<20}{'active':<8}{'auth':<7}{'interval':>9}{'tickets':>9}  "
            f"{'last synced':<26}base url"
        )
        for d in rows:
            synced = d.last_synced_at.isoformat(timespec="seconds") if d.last_synced_at else "-"
            click.echo(
                f"{d.name:<20}{'yes' if d.active else 'no':<8}{d.auth_kind:<7}"
                f"{d.sync_interval_seconds:>9}{counts.get(d.desk_id, 0):>9}  {synced:<26}"
                f"{d.base_url}"
            )
            if d.last_sync_error:
                click.echo(f"  last error: {d.last_sync_error}")

    @desks.command("update")
    @click.argument("name")
    @click.option(
        "--token-env", default=None, metavar="VAR", help="env var holding a new API token"
    )
    @click.option(
        "--oauth-token-env", default=None, metavar="VAR", help="env var holding a new OAuth token"
    )
    @click.option("--email", default=None, help="agent email for API-token auth")
    @click.option("--base-url", default=None, help="API base URL (a proxy or the sandbox)")
    @click.option("--sync-interval", default=None, type=click.IntRange(1), help="seconds")
    @click.option("--export-rate", default=None, type=click.IntRange(1), help="requests/minute")
    @click.option("--api-rate", default=None, type=click.IntRange(1), help="requests/minute")
    def desks_update(
        name: str,
        token_env: str | None,
        oauth_token_env: str | None,
        email: str | None,
        base_url: str | None,
        sync_interval: int | None,
        export_rate: int | None,
        api_rate: int | None,
    ) -> None:
        """Change desk NAME: rotate its token, its email, URL, interval or rates."""
        from assets.tickets.desks import DeskError, update_desk
        from resources.secrets import SecretBox, SecretError

        if token_env and oauth_token_env:
            raise UserError("give at most one of --token-env and --oauth-token-env")
        variable = token_env or oauth_token_env
        token = _token_from_env(variable) if variable else None
        settings = load_settings()
        try:
            box = SecretBox.from_settings(settings.secret_key, settings.home)
            with _connection(settings) as conn:
                desk = update_desk(
                    conn,
                    box,
                    name,
                    token=token,
                    oauth=bool(oauth_token_env) if token else None,
                    email=email,
                    base_url=base_url,
                    sync_interval_seconds=sync_interval,
                    export_rate_per_minute=export_rate,
                    api_rate_per_minute=api_rate,
                )
        except (DeskError, SecretError) as exc:
            raise UserError(str(exc)) from None
        what = ", ".join(
            label
            for label, given in (
                ("token", token),
                ("email", email),
                ("base url", base_url),
                ("sync interval", sync_interval),
                ("export rate", export_rate),
                ("API rate", api_rate),
            )
            if given
        )
        click.echo(f"updated desk {desk.name}: {what}")

    @desks.command("disable")
    @click.argument("name")
    def desks_disable(name: str) -> None:
        """Stop syncing desk NAME (its data stays)."""
        _set_active(name, False)
        click.echo(f"disabled desk {name}")

    @desks.command("enable")
    @click.argument("name")
    def desks_enable(name: str) -> None:
        """Sync desk NAME again."""
        _set_active(name, True)
        click.echo(f"enabled desk {name}")

    @desks.command("resync")
    @click.argument("name")
    def desks_resync(name: str) -> None:
        """Sync desk NAME from the beginning on its next run (rows converge, nothing twice)."""
        from assets.tickets.desks import DeskError, resync_desk

        try:
            with _connection(load_settings()) as conn:
                resync_desk(conn, name)
        except DeskError as exc:
            raise UserError(str(exc)) from None
        click.echo(f"desk {name}: cursors reset; the next sync reads everything again")

    @desks.command("remove")
    @click.argument("name")
    @click.option("--purge", is_flag=True, help="also delete the desk's rows in every table")
    def desks_remove(name: str, purge: bool) -> None:
        """Remove desk NAME (with --purge: and its rows, in one transaction)."""
        from assets.tickets.desks import DeskError, remove_desk

        try:
            with _connection(load_settings()) as conn:
                deleted = remove_desk(conn, name, purge=purge)
        except DeskError as exc:
            raise UserError(str(exc)) from None
        detail = ", ".join(f"{table} {count}" for table, count in deleted.items() if count)
        click.echo(
            f"removed desk {name}; deleted {sum(deleted.values())} rows"
            + (f" ({detail})" if detail else "")
        )

    @desks.command("repair-comments")
    @click.argument("name")
    @click.argument("ticket_ids", metavar="TICKET_ID...", nargs=-1, required=True, type=int)
    def desks_repair_comments(name: str, ticket_ids: tuple[int, ...]) -> None:
        """Re-read the comments of the given tickets of desk NAME through the per-ticket endpoint
        and add any the events export missed."""
        from assets.tickets.desks import DeskError, get_desk, open_desk_api
        from assets.tickets.store import repair_ticket_comments
        from resources.runtime import build_resources, warehouse_url
        from resources.warehouse import get_pool
        from resources.zendesk import ZendeskError

        settings = load_settings()
        pool = get_pool(warehouse_url(settings))
        try:
            with pool.connection() as conn:
                desk = get_desk(conn, name)
        except DeskError as exc:
            raise UserError(str(exc)) from None
        zendesk = build_resources(settings, for_dagster=False)["zendesk"]
        added = 0
        try:
            with open_desk_api(zendesk, desk) as api:
                for ticket_id in ticket_ids:
                    added += repair_ticket_comments(pool.connection, api, desk, ticket_id)
        except ZendeskError as exc:
            raise UserError(str(exc)) from None
        click.echo(f"desk {name}: {added} comment(s) added from {len(ticket_ids)} ticket(s)")

    @cli.command("sync")
    @click.argument("name")
    @click.option(
        "--page-size",
        default=1000,
        show_default=True,
        type=click.IntRange(1, 1000),
        help="tickets/events per export request",
    )
    def sync(name: str, page_size: int) -> None:
        """Sync desk NAME now, in this process: tickets, users, comments; print counts."""
        summary = run_sync(name, page_size=page_size)
        click.echo(summary)


def run_sync(name: str, *, page_size: int = 1000) -> str:
    """Materialize the desk's partition in process; the counts as one line, or UserError."""
    import dagster as dg

    from assets.tickets.defs import DESK_PARTITIONS, zendesk_ticket_comments, zendesk_tickets
    from assets.tickets.desks import DeskError, get_desk
    from assets.tickets.rules import DESK_TAG
    from orchestration.instance import write_instance
    from resources.runtime import make_warehouse, warehouse_url
    from resources.warehouse import get_pool
    from resources.zendesk import ZendeskClient

    settings = load_settings()
    url = warehouse_url(settings)
    try:
        with get_pool(url).connection() as conn:
            get_desk(conn, name)
    except DeskError as exc:
        raise UserError(str(exc)) from None
    # only what the two assets ask for: the queue, alert and export storage resources would
    # import the AWS SDK into a process that never uses it
    resources = {
        "warehouse": make_warehouse(settings),
        "zendesk": ZendeskClient(
            home=str(settings.home),
            secret_key=settings.secret_key or "",
            page_size=page_size,
            events_page_size=page_size,
        ),
    }
    # The run is recorded in the platform's instance, so it shows in the UI with its logs.
    write_instance(settings)
    instance = dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(DESK_PARTITIONS.name, name):
        instance.add_dynamic_partitions(DESK_PARTITIONS.name, [name])
    result = dg.materialize(
        [zendesk_tickets, zendesk_ticket_comments],
        partition_key=name,
        resources=resources,
        instance=instance,
        tags={DESK_TAG: name},
        raise_on_error=False,
        # nothing on the console: the run's full log (stack traces included) is in the instance
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
    )
    if not result.success:
        with get_pool(url).connection() as conn:
            error = get_desk(conn, name).last_sync_error
        raise UserError(
            f"sync of desk {name} failed: {error or _step_failure(result)} "
            f"(the run's full log: run {result.run_id} in the Dagster UI)"
        )
    metadata: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        metadata[materialization.asset_key.to_user_string()] = {
            key: value.value for key, value in materialization.metadata.items()
        }
    tickets = metadata.get("zendesk_tickets", {})
    users = metadata.get("zendesk_users", {})
    comments = metadata.get("zendesk_ticket_comments", {})
    return (
        f"desk {name}: tickets {tickets.get('tickets_seen', 0)} seen, "
        f"{tickets.get('rows_inserted', 0)} new, {tickets.get('rows_updated', 0)} updated, "
        f"{tickets.get('rows_deleted', 0)} deleted; users {users.get('rows_written', 0)} "
        f"written; comments {comments.get('rows_inserted', 0)} new from "
        f"{comments.get('events_seen', 0)} events; requests "
        f"{tickets.get('requests', 0) + comments.get('requests', 0)}"
    )


def _step_failure(result) -> str:
    """The cause of the first failed step, one line (the innermost error Dagster wraps)."""
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            return error.message.strip().splitlines()[0][:500]
    return "the run failed"
