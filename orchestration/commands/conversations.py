"""Conversation commands: `origins add|list|disable|enable`, `work-queues add|list|update`,
`conversations show|counters|search|close-after`.

Every change runs in one transaction under the tenant's lock: a refused request (unknown channel,
duplicate name, bad condition) prints one line on stderr, exits 2 and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from orchestration.commands import UserError, load_settings, require_known_tenant


def _connect():
    from resources.runtime import build_resources, warehouse_url

    settings = load_settings()
    warehouse_url(settings)
    return build_resources(settings, for_dagster=False)["warehouse"].connection


def _read_condition(path: str) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"--condition: cannot read {path}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--condition: {path} is not JSON: {exc}") from exc


def _visible_to(values: tuple[str, ...]) -> dict[str, list[str]] | None:
    """`group:NAME` / `agent:NAME` options as {"groups": [...], "agents": [...]}."""
    if not values:
        return None
    seen: dict[str, list[str]] = {"groups": [], "agents": []}
    for value in values:
        kind, _, name = value.partition(":")
        if kind not in ("group", "agent") or not name:
            raise UserError(f"--visible-to: expected group:NAME or agent:NAME, got {value!r}")
        seen[kind + "s"].append(name)
    return seen


def _save_queue(
    tenant: str,
    name: str,
    condition_file: str | None,
    priority: int | None,
    visible_to: tuple[str, ...],
    *,
    create: bool,
) -> None:
    from assets.conversations.rules import ConditionError
    from assets.conversations.store import ConversationError, save_work_queue

    condition = _read_condition(condition_file) if condition_file else None
    seen = _visible_to(visible_to)
    try:
        with _connect()() as conn:
            queue = save_work_queue(
                conn,
                tenant,
                name,
                condition=condition,
                priority=priority,
                visible_to=seen,
                create=create,
            )
    except ConditionError as exc:
        raise UserError(f"--condition: {exc}") from exc
    except ConversationError as exc:
        raise UserError(str(exc)) from exc
    verb = "added" if create else "updated"
    click.echo(f"work queue {queue.name} of {queue.tenant_id} {verb} (priority {queue.priority})")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def register(cli: click.Group) -> None:
    @cli.group("origins")
    def origins() -> None:
        """Channels a tenant's messages come from (Facebook, Instagram, X, WhatsApp, ...)."""

    @origins.command("add")
    @click.argument("tenant")
    @click.argument("name")
    @click.option(
        "--channel",
        required=True,
        type=click.Choice(["facebook", "instagram", "x", "whatsapp", "linkedin", "mail"]),
    )
    @click.option("--ref", required=True, help="the channel's reference messages name")
    def origins_add(tenant: str, name: str, channel: str, ref: str) -> None:
        """Register origin NAME of TENANT."""
        from assets.conversations.store import ConversationError, add_origin

        try:
            with _connect()() as conn:
                origin = add_origin(conn, tenant, name, channel, ref)
        except ConversationError as exc:
            raise UserError(str(exc)) from exc
        click.echo(f"origin {origin.name} ({origin.channel}, ref {origin.ref}) added to {tenant}")

    @origins.command("list")
    @click.argument("tenant", required=False)
    def origins_list(tenant: str | None) -> None:
        """Origins (of one tenant, or all)."""
        from assets.conversations.store import list_origins

        with _connect()() as conn:
            rows = list_origins(conn, tenant)
        for o in rows:
            state = "active" if o.active else "disabled"
            click.echo(f"{o.tenant_id}\t{o.name}\t{o.channel}\tref={o.ref}\t{state}")

    def _set_active(name: str, tenant: str | None, active: bool) -> None:
        from assets.conversations.store import ConversationError, set_origin_active

        settings = load_settings()
        try:
            with _connect()() as conn:
                origin, replayed = set_origin_active(
                    conn,
                    name,
                    active,
                    tenant_id=tenant,
                    default_close_after=settings.ticket_close_after_minutes,
                )
        except ConversationError as exc:
            raise UserError(str(exc)) from exc
        if active:
            click.echo(
                f"origin {origin.name} of {origin.tenant_id} enabled; "
                f"{replayed} shadowed message(s) replayed"
            )
        else:
            click.echo(
                f"origin {origin.name} of {origin.tenant_id} disabled: "
                "its messages are stored shadowed until it is enabled"
            )

    @origins.command("disable")
    @click.argument("name")
    @click.option("--tenant", default=None, help="the tenant (when several have NAME)")
    def origins_disable(name: str, tenant: str | None) -> None:
        """Disable origin NAME: new messages are kept, shadowed, and change no ticket."""
        _set_active(name, tenant, False)

    @origins.command("enable")
    @click.argument("name")
    @click.option("--tenant", default=None, help="the tenant (when several have NAME)")
    def origins_enable(name: str, tenant: str | None) -> None:
        """Enable origin NAME and replay its shadowed messages, oldest first."""
        _set_active(name, tenant, True)

    @cli.group("work-queues")
    def work_queues() -> None:
        """Agents' work queues: a condition over ticket properties, with live counters."""

    queue_options = [
        click.option("--priority", type=int, default=None, help="order agents see (high first)"),
        click.option(
            "--visible-to",
            multiple=True,
            metavar="group:NAME|agent:NAME",
            help="who sees the queue (repeatable)",
        ),
    ]

    def _with_queue_options(fn):
        for option in reversed(queue_options):
            fn = option(fn)
        return fn

    @work_queues.command("add")
    @click.argument("tenant")
    @click.argument("name")
    @click.option("--condition", "condition_file", required=True, metavar="FILE.json")
    @_with_queue_options
    def work_queues_add(
        tenant: str,
        name: str,
        condition_file: str,
        priority: int | None,
        visible_to: tuple[str, ...],
    ) -> None:
        """Add work queue NAME to TENANT; its open tickets are evaluated at once."""
        _save_queue(tenant, name, condition_file, priority, visible_to, create=True)

    @work_queues.command("update")
    @click.argument("tenant")
    @click.argument("name")
    @click.option("--condition", "condition_file", default=None, metavar="FILE.json")
    @_with_queue_options
    def work_queues_update(
        tenant: str,
        name: str,
        condition_file: str | None,
        priority: int | None,
        visible_to: tuple[str, ...],
    ) -> None:
        """Change work queue NAME of TENANT; every open ticket is evaluated again."""
        if condition_file is None and priority is None and not visible_to:
            raise UserError("nothing to update: give --condition, --priority or --visible-to")
        _save_queue(tenant, name, condition_file, priority, visible_to, create=False)

    @work_queues.command("list")
    @click.argument("tenant", required=False)
    def work_queues_list(tenant: str | None) -> None:
        """Work queues (of one tenant, or all), in the order agents see them."""
        from assets.conversations.store import list_work_queues

        with _connect()() as conn:
            rows = list_work_queues(conn, tenant)
        for q in rows:
            click.echo(
                f"{q.tenant_id}\t{q.name}\tpriority={q.priority}\t"
                f"visible_to={json.dumps(q.visible_to, sort_keys=True)}\t"
                f"condition={json.dumps(q.condition, sort_keys=True)}"
            )

    @cli.group("conversations")
    def conversations() -> None:
        """Conversation tickets: one ticket, queue counters, message search."""

    @conversations.command("show")
    @click.argument("tenant")
    @click.argument("sequence", type=int)
    def conversations_show(tenant: str, sequence: int) -> None:
        """Ticket SEQUENCE of TENANT: properties, messages, state changes and queues."""
        from assets.conversations.store import show_ticket

        with _connect()() as conn:
            require_known_tenant(conn, tenant)
            view = show_ticket(conn, tenant, sequence)
        if view is None:
            raise UserError(f"tenant {tenant!r} has no ticket {sequence}")
        t = view.ticket
        click.echo(
            f"ticket {t['sequence']} of {tenant}  [{t['state']}]  priority {t['priority']}  "
            f"{t['origin_name']} ({t['channel']})  customer {t['author_external_id']}"
            + (f" ({t['author_name']})" if t["author_name"] else "")
        )
        click.echo(
            f"  owner {t['owner_agent'] or '-'} / group {t['owner_group'] or '-'}  "
            f"tags {','.join(t['tags']) or '-'}  topic {t['topic'] or '-'}  "
            f"language {t['language'] or '-'}  sentiment {t['sentiment_label'] or '-'}  "
            f"rating {t['star_rating'] or '-'}  visible messages {t['visible_message_count']}"
        )
        click.echo(
            f"  created {_when(t['created_at'])}  first response {_when(t['first_response_at'])}"
            f"  last customer message {_when(t['last_customer_message_at'])}"
            + (f"  follow-up {_when(t['followup_until'])}" if t["followup_until"] else "")
        )
        click.echo("messages:")
        for m in view.messages:
            flags = "".join(f" [{flag}]" for flag in ("deleted", "hidden") if m[flag]) + (
                f" [rating {m['rating']}]" if m["rating"] else ""
            )
            click.echo(
                f"  {_when(m['sent_at'])}  {m['kind']:<13} {m['author_external_id']:<16}"
                f"{flags} {m['text']}"
            )
        click.echo("states:")
        for c in view.state_changes:
            click.echo(
                f"  {_when(c['changed_at'])}  {c['from_state'] or '-':>8} -> {c['to_state']:<8} "
                f"({c['cause']}{', ' + c['event_id'] if c['event_id'] else ''})"
            )
        click.echo(f"queues: {', '.join(view.queues) or '-'}")

    @conversations.command("counters")
    @click.argument("tenant")
    def conversations_counters(tenant: str) -> None:
        """TENANT's work queues with their ticket counts per state."""
        from assets.conversations.rules import ACTIVE_STATES
        from assets.conversations.store import queue_counts

        with _connect()() as conn:
            require_known_tenant(conn, tenant)
            rows = queue_counts(conn, tenant)
        if not rows:
            click.echo(f"tenant {tenant} has no work queues")
            return
        click.echo("queue\tpriority\t" + "\t".join(ACTIVE_STATES) + "\ttotal")
        for name, priority, counts in rows:
            cells = [str(counts.get(state, 0)) for state in ACTIVE_STATES]
            click.echo(f"{name}\t{priority}\t" + "\t".join(cells) + f"\t{sum(counts.values())}")

    # `-word` excludes a word (web-search syntax), so unknown "options" are words
    @conversations.command("search", context_settings={"ignore_unknown_options": True})
    @click.argument("tenant")
    @click.argument("words", nargs=-1, required=True, type=click.UNPROCESSED)
    @click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
    def conversations_search(tenant: str, words: tuple[str, ...], limit: int) -> None:
        """Messages of TENANT matching WORDS ("quoted phrase", or, -word), best first."""
        from assets.conversations.store import search_messages

        with _connect()() as conn:
            require_known_tenant(conn, tenant)
            rows = search_messages(conn, tenant, " ".join(words), limit)
        for r in rows:
            hidden = " [hidden]" if r["hidden"] else ""
            click.echo(
                f"#{r['sequence']}\t{_when(r['sent_at'])}\t{r['kind']}\t{r['author_external_id']}"
                f"{hidden}\t{r['excerpt']}"
            )
        if not rows:
            click.echo("no messages match")

    @conversations.command("close-after")
    @click.argument("tenant")
    @click.argument("minutes")
    def conversations_close_after(tenant: str, minutes: str) -> None:
        """Close TENANT's solved/pending tickets after MINUTES (or `default`: the setting)."""
        from assets.conversations.store import ConversationError, set_close_after_minutes

        if minutes == "default":
            value = None
        elif minutes.isdigit() and int(minutes) > 0:
            value = int(minutes)
        else:
            raise UserError(f"MINUTES: expected a positive number or 'default', got {minutes!r}")
        try:
            with _connect()() as conn:
                set_close_after_minutes(conn, tenant, value)
        except ConversationError as exc:
            raise UserError(str(exc)) from exc
        shown = f"{value} minutes" if value else "the default period"
        click.echo(f"tickets of {tenant} close {shown} after being solved or pending")
