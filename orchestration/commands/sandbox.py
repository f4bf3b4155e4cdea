"""`supportflow sandbox serve`: run the local SaaS stand-ins (Zendesk, and whatever else
`sandbox.server.ROUTE_PROVIDERS` lists) in the foreground."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    @cli.group()
    def sandbox() -> None:
        """Local stand-ins for the SaaS APIs (demo, tests, benchmarks)."""

    @sandbox.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
    @click.option("--seed", default=1, show_default=True, type=int)
    @click.option("--tickets", default=1000, show_default=True, type=click.IntRange(0))
    @click.option(
        "--comments-per-ticket", default=4.0, show_default=True, type=click.FloatRange(1.0)
    )
    @click.option(
        "--clock-scale",
        default=1.0,
        show_default=True,
        type=click.FloatRange(min=0.001),
        help="sandbox seconds per real second for rate-limit windows",
    )
    @click.option("--no-rate-limit", is_flag=True, help="serve without Zendesk's rate limits")
    def serve(
        host: str,
        port: int,
        seed: int,
        tickets: int,
        comments_per_ticket: float,
        clock_scale: float,
        no_rate_limit: bool,
    ) -> None:
        """Serve the sandbox APIs on HOST:PORT with data generated from SEED."""
        from sandbox.server import SandboxConfig
        from sandbox.server import serve as serve_app
        from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_OAUTH_TOKEN, SANDBOX_TOKEN

        config = SandboxConfig(
            seed=seed,
            tickets=tickets,
            comments_per_ticket=comments_per_ticket,
            clock_scale=clock_scale,
            rate_limits=not no_rate_limit,
        )
        # sandbox credentials are fixed public test values, not secrets
        click.echo(
            f"Zendesk sandbox on http://{host}:{port} (seed {seed}, {tickets} tickets); "
            f"email {SANDBOX_EMAIL}, API token {SANDBOX_TOKEN!r}, OAuth token "
            f"{SANDBOX_OAUTH_TOKEN!r}"
        )
        serve_app(config, host=host, port=port)
