"""`supportflow demo`: every pipeline on sandbox data, then a summary (orchestration/demo.py)."""

from __future__ import annotations

import click

from orchestration.commands import load_settings


def register(cli: click.Group) -> None:
    @cli.command("demo")
    @click.option(
        "--conversation-messages",
        type=click.IntRange(min=30),
        default=1500,
        show_default=True,
        help="Channel messages the conversations step sends (fewer for a quick look, or on a "
        "queue service that is slow with long queues).",
    )
    def demo(conversation_messages: int) -> None:
        """Start what is needed, run every pipeline on sandbox data, print a summary."""
        from orchestration.demo import run_demo

        run_demo(load_settings(), conversation_messages=conversation_messages)
