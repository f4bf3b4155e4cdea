"""Feedback commands: `workspaces add|list`, `sources add|list`, `insights WORKSPACE`.

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

    @sources.command("list")
    @click.argument("workspace", required=False)
    def sources_list(workspace: str | None) -> None:
        """Sources (of one workspace, or all) with their config and cursor."""
        from assets.feedback.store import list_sources

        with _connect()() as conn:
            rows = list_sources(conn, workspace, active_only=False)
        for source in rows:
            click.echo(
                f"{source.workspace_name}/{source.name}\t{source.kind}\t"
                f"config={json.dumps(_redacted(source.config), sort_keys=True)}\t"
                f"cursor={json.dumps(dict(source.cursor), sort_keys=True)}"
            )

    @cli.command("insights")
    @click.argument("workspace")
    @click.option("--days", default=7, show_default=True, type=click.IntRange(1, 366))
    def insights(workspace: str, days: int) -> None:
        """Print WORKSPACE's latest insight reports (the last --days days that have reports)."""
        from assets.feedback.insights import latest_reports
        from assets.feedback.store import WorkspaceError, get_workspace

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
