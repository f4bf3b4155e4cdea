"""`supportflow demo`: every pipeline on sandbox data, then a summary (orchestration/demo.py)."""

from __future__ import annotations

import click

from orchestration.commands import load_settings


def register(cli: click.Group) -> None:
    @cli.command("demo")
    def demo() -> None:
        """Start what is needed, run every pipeline on sandbox data, print a summary."""
        from orchestration.demo import run_demo

        run_demo(load_settings())
