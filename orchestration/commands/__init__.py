"""The CLI's commands, one module per domain, and what they share.

Each module exposes `register(cli: click.Group)`; `orchestration/cli.py` registers them all. The
modules import the domains' code inside the commands on purpose: a quick command such as
`supportflow db url` must not pay for importing Dagster, pandas or scikit-learn.
"""

from __future__ import annotations

import click

from resources.settings import ConfigError, Settings


class UserError(click.ClickException):
    """A problem with what the user asked for: one line, exit 2."""

    exit_code = 2


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise UserError(str(exc)) from exc


def require_known_tenant(conn: object, tenant: str) -> None:
    """Refuse (one line, exit 2) a tenant the platform has neither configuration nor data of."""
    from resources.tenants import tenant_is_known

    if not tenant_is_known(conn, tenant):  # type: ignore[arg-type]
        raise UserError(
            f"TENANT: unknown tenant {tenant!r} (no desk, workspace, origin, email setting "
            "or data of it here)"
        )
