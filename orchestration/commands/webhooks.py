"""`supportflow webhooks serve`: run the webhook service (webhooks/app.py) in the foreground."""

from __future__ import annotations

import click

from orchestration.commands import load_settings


def register(cli: click.Group) -> None:
    @cli.group("webhooks")
    def webhooks() -> None:
        """The webhook service (email providers, pushed feedback)."""

    @webhooks.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="interface to bind")
    @click.option(
        "--port", default=8088, show_default=True, type=click.IntRange(1, 65535), help="TCP port"
    )
    def serve(host: str, port: int) -> None:
        """Receive provider webhooks and write them to the queues."""
        from webhooks.app import serve as serve_app

        serve_app(host, port, load_settings())
