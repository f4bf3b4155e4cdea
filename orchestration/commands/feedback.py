"""Feedback commands: `workspaces add|list`, `sources add|list|token|key`, `insights WORKSPACE`.

`sources add` takes the options of every registered source kind (assets.feedback.sources), so a
new kind brings its options with it; an option another kind owns is refused.
"""

from __future__ import annotations

import json
from typing import Any

import click

from orchestration.commands import UserError, load_settings


def _connect():
    from resources.runtime import build_resources, warehouse_url

    settings = load_settings()
    warehouse_url(settings)
    return build_resources(settings, for_dagster=False)["warehouse"].connection


def _redacted(config: Any) -> dict[str, Any]:
    """A source config for display: encrypted secrets shown as set, not as ciphertext."""
    return {k: ("<encrypted>" if k.endswith("_encrypted") else v) for k, v in config.items()}


def _kind_options() -> list[click.Option]:
    """One click option per distinct option name across the registered kinds."""
    from assets.feedback.sources import SOURCE_KINDS

    seen: dict[str, tuple[Any, list[str]]] = {}
    for kind in SOURCE_KINDS.values():
        for option in kind.options:
            entry = seen.setdefault(option.name, (option, []))
            entry[1].append(kind.name)
    return [
        click.Option(
            [f"--{name}"],
            multiple=option.multiple,
            default=None,
            help=f"[{', '.join(kinds)}] {option.help}",
        )
        for name, (option, kinds) in seen.items()
    ]


def _deleted_text(deleted: dict[str, int]) -> str:
    detail = ", ".join(f"{table} {count}" for table, count in deleted.items() if count)
    return f"deleted {sum(deleted.values())} rows" + (f" ({detail})" if detail else "")


def register(cli: click.Group) -> None:
    from assets.feedback.sources import SOURCE_KINDS

    @cli.group("workspaces")
    def workspaces() -> None:
        """Feedback workspaces (a team's feedback from several sources)."""

    @workspaces.command("add")
    @click.argument("name")
    @click.option("--tenant", default=None, help="tenant id (default: the workspace name)")
    def workspaces_add(name: str, tenant: str | None) -> None:
        """Create workspace NAME."""
        from assets.feedback.store import WorkspaceError, create_workspace

        with _connect()() as conn:
            try:
                workspace = create_workspace(conn, name, tenant)
            except WorkspaceError as exc:
                raise UserError(str(exc)) from exc
        click.echo(f"workspace {workspace.name} (tenant {workspace.tenant_id}) created")

    @workspaces.command("list")
    def workspaces_list() -> None:
        """Workspaces and how many active sources each has."""
        from assets.feedback.store import list_workspaces

        with _connect()() as conn:
            rows = list_workspaces(conn)
        for workspace, sources in rows:
            click.echo(f"{workspace.name}\ttenant={workspace.tenant_id}\tsources={sources}")

    @cli.group("sources")
    def sources() -> None:
        """Feedback sources of a workspace."""

    def sources_add(workspace: str, kind: str, name: str | None, **options: Any) -> None:
        """Connect a source of --kind to WORKSPACE."""
        import os

        from assets.feedback.rules import SourceConfigError, SourceRef
        from assets.feedback.sources import source_kind
        from assets.feedback.sources.base import ConfigContext
        from assets.feedback.store import WorkspaceError, add_source, get_workspace
        from resources.secrets import SecretBox

        source_kind_ = source_kind(kind)
        own = {option.name.replace("-", "_") for option in source_kind_.options}
        given = {k: v for k, v in options.items() if v not in (None, ())}
        foreign = sorted(k for k in given if k not in own)
        if foreign:
            names = ", ".join("--" + k.replace("_", "-") for k in foreign)
            raise UserError(f"kind {kind} does not take {names}")
        dashed = {k.replace("_", "-"): v for k, v in given.items()}
        try:
            settings = load_settings()
            box = SecretBox.from_settings(settings.secret_key, settings.home)
            config = source_kind_.build_config(dashed, ConfigContext(box, dict(os.environ)))
            with _connect()() as conn:
                target = get_workspace(conn, workspace)
                source_kind_.check(conn, config)
                source_id = add_source(conn, target, name or kind, kind, config)
                ref = SourceRef(
                    source_id, target.workspace_id, target.name, target.tenant_id,
                    name or kind, kind, config, {},
                )  # fmt: skip
                shown = source_kind_.after_create(conn, ref)
        except (SourceConfigError, WorkspaceError) as exc:
            raise UserError(str(exc)) from exc
        click.echo(f"source {name or kind} ({kind}) added to workspace {workspace}")
        for label, value in shown.items():
            click.echo(f"{label}: {value}")

    sources.add_command(
        click.Command(
            "add",
            callback=sources_add,
            help=sources_add.__doc__,
            params=[
                click.Argument(["workspace"]),
                click.Option(
                    ["--kind"],
                    required=True,
                    type=click.Choice(sorted(SOURCE_KINDS)),
                    help="source kind",
                ),
                click.Option(["--name"], default=None, help="source name (default: the kind)"),
                *_kind_options(),
            ],
        )
    )

    @sources.command("token")
    @click.argument("workspace")
    def sources_token(workspace: str) -> None:
        """Rotate WORKSPACE's webhook bearer token: a new one is printed once; the old one
        stops working at once."""
        from assets.feedback.store import WorkspaceError, issue_webhook_token, webhook_source

        with _connect()() as conn:
            try:
                source, _ = webhook_source(conn, workspace)
            except WorkspaceError as exc:
                raise UserError(str(exc)) from None
            token = issue_webhook_token(conn, source.workspace_id)
        click.echo(f"bearer token (shown once, store it now): {token}")

    @sources.command("key")
    @click.argument("workspace")
    @click.argument("source")
    @click.option("--api-key-env", required=True, metavar="VAR", help="env var holding the key")
    def sources_key(workspace: str, source: str, api_key_env: str) -> None:
        """Replace the API key of WORKSPACE's source SOURCE (a private Discourse forum): read
        from the named variable, stored encrypted, never printed."""
        import os

        from assets.feedback.store import list_sources, update_source_config
        from resources.secrets import SecretBox

        key = os.environ.get(api_key_env, "").strip()
        if not key:
            raise UserError(f"environment variable {api_key_env} is not set or empty")
        settings = load_settings()
        box = SecretBox.from_settings(settings.secret_key, settings.home)
        with _connect()() as conn:
            found = [s for s in list_sources(conn, workspace) if s.name == source]
            if not found or "api_key_encrypted" not in found[0].config:
                raise UserError(f"{workspace}/{source} is not an active source with an API key")
            update_source_config(
                conn, found[0].source_id, {"api_key_encrypted": box.encrypt(key).decode()}
            )
        click.echo(f"{workspace}/{source}: API key replaced")

    def _source_change(change, *args, **kwargs):
        from assets.feedback.store import WorkspaceError

        try:
            with _connect()() as conn:
                return change(conn, *args, **kwargs)
        except WorkspaceError as exc:
            raise UserError(str(exc)) from None

    @sources.command("disable")
    @click.argument("workspace")
    @click.argument("source")
    def sources_disable(workspace: str, source: str) -> None:
        """Stop pulling (or accepting pushes for) WORKSPACE's SOURCE; its items stay."""
        from assets.feedback.store import set_source_active

        _source_change(set_source_active, workspace, source, False)
        click.echo(f"disabled source {workspace}/{source}")

    @sources.command("enable")
    @click.argument("workspace")
    @click.argument("source")
    def sources_enable(workspace: str, source: str) -> None:
        """Pull WORKSPACE's SOURCE again, from where it stopped."""
        from assets.feedback.store import set_source_active

        _source_change(set_source_active, workspace, source, True)
        click.echo(f"enabled source {workspace}/{source}")

    @sources.command("update")
    @click.argument("workspace")
    @click.argument("source")
    @click.option("--api-key-env", default=None, metavar="VAR", help="env var with a new API key")
    @click.option("--rename", default=None, metavar="NAME", help="a new name for the source")
    @click.pass_context
    def sources_update(
        ctx: click.Context,
        workspace: str,
        source: str,
        api_key_env: str | None,
        rename: str | None,
    ) -> None:
        """Change WORKSPACE's SOURCE: rotate its API key (read from the named variable, stored
        encrypted), rename it."""
        from assets.feedback.store import rename_source

        if not api_key_env and not rename:
            raise UserError("nothing to update: give --api-key-env or --rename")
        if api_key_env:
            ctx.invoke(sources_key, workspace=workspace, source=source, api_key_env=api_key_env)
        if rename:
            _source_change(rename_source, workspace, source, rename)
            click.echo(f"{workspace}/{source}: renamed to {rename}")

    @sources.command("remove")
    @click.argument("workspace")
    @click.argument("source")
    @click.option("--purge", is_flag=True, help="also delete the items it brought")
    def sources_remove(workspace: str, source: str, purge: bool) -> None:
        """Remove WORKSPACE's SOURCE (with --purge: and its items, in one transaction)."""
        from assets.feedback.store import remove_source

        deleted = _source_change(remove_source, workspace, source, purge=purge)
        click.echo(f"removed source {workspace}/{source}; {_deleted_text(deleted)}")

    @workspaces.command("remove")
    @click.argument("name")
    @click.option("--purge", is_flag=True, help="also delete its sources, items and reports")
    def workspaces_remove(name: str, purge: bool) -> None:
        """Remove workspace NAME (with --purge: everything of it, in one transaction)."""
        from assets.feedback.store import remove_workspace

        deleted = _source_change(remove_workspace, name, purge=purge)
        click.echo(f"removed workspace {name}; {_deleted_text(deleted)}")

    @sources.command("list")
    @click.argument("workspace", required=False)
    def sources_list(workspace: str | None) -> None:
        """Sources (of one workspace, or all) with their config and cursor, and the last error
        of a source whose pulls fail."""
        from assets.feedback.store import (
            WorkspaceError,
            get_workspace,
            list_sources,
            source_errors,
        )

        with _connect()() as conn:
            if workspace is not None:
                try:
                    get_workspace(conn, workspace)
                except WorkspaceError as exc:
                    raise UserError(str(exc)) from exc
            rows = list_sources(conn, workspace, active_only=False)
            errors = source_errors(conn, workspace)
        for source in rows:
            click.echo(
                f"{source.workspace_name}/{source.name}\t{source.kind}\t"
                f"config={json.dumps(_redacted(source.config), sort_keys=True)}\t"
                f"cursor={json.dumps(dict(source.cursor), sort_keys=True)}"
            )
            failed = errors.get(source.source_id)
            if failed is not None:
                click.echo(
                    f"  last error ({failed.failed_pulls} failed pull(s) in a row, last at "
                    f"{failed.at.isoformat(timespec='seconds')}): {failed.error}"
                )

    @cli.command("insights")
    @click.argument("workspace")
    @click.option("--days", default=7, show_default=True, type=click.IntRange(1, 366))
    def insights(workspace: str, days: int) -> None:
        """Print WORKSPACE's latest insight reports (the last --days days that have reports)."""
        from assets.feedback.store import WorkspaceError, get_workspace, latest_reports

        with _connect()() as conn:
            try:
                target = get_workspace(conn, workspace)
            except WorkspaceError as exc:
                raise UserError(str(exc)) from exc
            rows = latest_reports(conn, target.workspace_id, days)
        if not rows:
            click.echo(f"no insight reports for {workspace} yet (materialize insight_reports)")
            return
        current = None
        for day, source, items, pos, neu, neg, avg, top, anomalies in rows:
            if day != current:
                click.echo(f"\n{day.isoformat()}")
                current = day
            avg_text = "n/a" if avg is None else f"{avg:+.2f}"
            click.echo(
                f"  {source:<10} items={items:<5} +{pos} ={neu} -{neg}  avg sentiment {avg_text}"
            )
            if source == "all":
                for topic in top[:3]:
                    click.echo(f"    topic: {topic['topic']} ({topic['items']})")
            for anomaly in anomalies:
                click.echo(f"    ANOMALY {anomaly['kind']}: {anomaly['detail']}")
