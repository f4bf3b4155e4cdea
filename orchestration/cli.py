"""The `supportflow` command line.

Each domain keeps its commands in `orchestration/commands/<domain>.py`, registered below. Bad
input gets one line on stderr and exit code 2; nothing half-written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from orchestration.commands import (
    UserError,
    activities,
    api,
    conversations,
    demo,
    email,
    feedback,
    load_settings,
    sandbox,
    secrets,
    tickets,
    webhooks,
)
from resources.settings import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """supportflow: customer-support data in PostgreSQL, orchestrated by Dagster."""


# --- db -----------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The warehouse database."""


@db.command("up")
def db_up() -> None:
    """Start the embedded server if needed, migrate, write the Dagster instance; print the URL."""
    from orchestration.instance import write_instance
    from resources.runtime import warehouse_url

    settings = load_settings()
    url = warehouse_url(settings)
    write_instance(settings)
    click.echo(url)


@db.command("url")
def db_url() -> None:
    """Print the warehouse URL (starting the embedded server if needed)."""
    from resources.runtime import warehouse_url

    click.echo(warehouse_url(load_settings()))


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    from resources.warehouse import stop_embedded_server

    settings = load_settings()
    if settings.database_url:
        raise UserError("SUPPORTFLOW_DATABASE_URL is set: supportflow does not manage that server")
    stopped = stop_embedded_server(settings.home)
    click.echo("stopped" if stopped else "not running")


# --- queue --------------------------------------------------------------------------------------


@cli.group()
def queue() -> None:
    """Message queues."""


def read_jsonl(path: Path, dedup_key: Any = None) -> list[dict]:
    """Every line a JSON object that a queue can take; the first bad line is an error naming
    its number and the reason (not JSON, nested too deep, content PostgreSQL jsonb cannot
    store such as NaN, \\u0000 or a lone surrogate, or over the 256 KiB message limit)."""
    from resources.payloads import PayloadError, encode_message, loads
    from resources.queues import dedup_id_for

    bodies: list[dict] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            body = loads(line)
        except PayloadError as exc:
            raise UserError(f"{path}:{number}: {exc}") from None
        if not isinstance(body, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(body).__name__}")
        try:
            encode_message(body, dedup_id_for(body, dedup_key))
        except PayloadError as exc:
            raise UserError(f"{path}:{number}: the message {exc}") from None
        bodies.append(body)
    return bodies


@queue.command("send")
@click.argument("queue_name", metavar="QUEUE")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def queue_send(queue_name: str, file: Path) -> None:
    """Publish FILE.jsonl (one JSON object a line) to QUEUE, each message known by the idempotency
    key its domain declares for QUEUE."""
    from orchestration.message_keys import message_key
    from resources.queues import QueueError, validate_queue_name
    from resources.runtime import make_queues, warehouse_url

    try:
        validate_queue_name(queue_name)
    except QueueError as exc:
        raise UserError(str(exc)) from exc
    bodies = read_jsonl(file, message_key(queue_name))
    settings = load_settings()
    if settings.queue_backend == "postgres":
        warehouse_url(settings)
    try:
        sent = make_queues(settings).send(queue_name, bodies, dedup_key=message_key(queue_name))
    except QueueError as exc:
        raise UserError(f"could not send to {queue_name}: {exc}") from None
    click.echo(f"sent {sent} message(s) to {queue_name}")


def _routed_pods(url: str) -> set[str]:
    from assets.email.store import routed_pods
    from resources.warehouse import get_pool

    with get_pool(url).connection() as conn:
        return routed_pods(conn)


@queue.command("stats")
def queue_stats() -> None:
    """Depth, in flight, delayed and dead-lettered messages per queue, pod queues included."""
    from resources.queues import QueueStats
    from resources.runtime import make_queues, warehouse_url

    settings = load_settings()
    url = warehouse_url(settings) if settings.queue_backend == "postgres" else None
    rows = make_queues(settings).stats()
    # pod queues exist before their first message: this deployment's, the default pod's and
    # every pod a tenant is routed to (SQS lists the ones created; PostgreSQL only holds rows)
    pods = {settings.pod, settings.email_default_pod} | _routed_pods(url or warehouse_url(settings))
    listed = {row.queue for row in rows}
    rows += [
        QueueStats(f"email_events.{pod}", 0, 0, 0, 0)
        for pod in pods
        if f"email_events.{pod}" not in listed
    ]
    rows.sort(key=lambda row: row.queue)
    click.echo(f"{'queue':<28}{'visible':>10}{'in flight':>11}{'delayed':>10}{'dead':>8}")
    for row in rows:
        click.echo(
            f"{row.queue:<28}{row.visible:>10}{row.in_flight:>11}{row.delayed:>10}{row.dead:>8}"
        )


# --- dagster ------------------------------------------------------------------------------------


@cli.command("dev")
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--demo-interval",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="After `supportflow demo`: seconds between the living demo's rounds of events.",
)
def dev(port: int, host: str, demo_interval: float) -> None:
    """Open the Dagster UI (and daemon) on the supportflow code location; Ctrl-C or SIGTERM
    stops all of it. After `supportflow demo` it also keeps the demo alive: its sandbox served
    again and a gentle stream of new events."""
    from orchestration.dev import dev_commands, supervise
    from orchestration.instance import write_instance
    from orchestration.living_demo import start_living_demo
    from resources.runtime import warehouse_url
    from resources.settings import dev_environment, put_first_on_path

    settings = load_settings()
    database_url = warehouse_url(settings)
    write_instance(settings)
    put_first_on_path(str(Path(sys.executable).parent))  # dbt, for the manifest (prepare_if_dev)
    environment = dev_environment()  # before the living demo sets its webhook keys here
    stop_living_demo = start_living_demo(settings, database_url, demo_interval)
    try:
        code = supervise(dev_commands(host, port), environment)
    finally:
        if stop_living_demo is not None:
            stop_living_demo()
    sys.exit(code)


def _register_domains() -> None:
    for commands in (
        demo,
        activities,
        webhooks,
        email,
        sandbox,
        tickets,
        feedback,
        api,
        conversations,
        secrets,
    ):
        commands.register(cli)


def main(argv: list[str] | None = None) -> int:
    """Entry point: click without its multi-line usage errors."""
    _register_domains()
    try:
        cli.main(args=argv, prog_name="supportflow", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("supportflow: aborted", err=True)
        return 1
    except click.ClickException as exc:
        message = exc.format_message().replace("\n", " ")
        click.echo(f"supportflow: error: {message}", err=True)
        return exc.exit_code if isinstance(exc, UserError) else 2
    except ConfigError as exc:
        click.echo(f"supportflow: error: {exc}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
