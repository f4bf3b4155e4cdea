"""`supportflow api-tokens add|list|revoke`: per-tenant tokens of the helpdesk read API."""

from __future__ import annotations

import click

from orchestration.commands import UserError, load_settings


def _connection():
    from resources.runtime import warehouse_url
    from resources.warehouse import get_pool

    return get_pool(warehouse_url(load_settings())).connection()


def _tenant(value: str) -> str:
    from assets.activities.rules import TENANT_ID_RE

    if not TENANT_ID_RE.match(value):
        raise UserError(f"TENANT: letters, digits, '.', '_' or '-' (max 64): {value!r}")
    return value


def register(cli: click.Group) -> None:
    @cli.group("api-tokens")
    def api_tokens() -> None:
        """Tokens of the helpdesk read API (/api/v1/), one tenant each."""

    @api_tokens.command("add")
    @click.argument("tenant")
    @click.option("--name", default="helpdesk", show_default=True, help="what the token is for")
    def add(tenant: str, name: str) -> None:
        """Make a token for TENANT; it is printed once and only its hash is stored."""
        from resources.api_tokens import ApiTokenError, issue_api_token

        tenant = _tenant(tenant)
        try:
            with _connection() as conn:
                token = issue_api_token(conn, tenant, name)
        except ApiTokenError as exc:
            raise UserError(str(exc)) from None
        click.echo(token)
        click.echo(f"token {name!r} of tenant {tenant}: shown once, store it now", err=True)

    @api_tokens.command("list")
    @click.option("--tenant", default=None, help="only this tenant's tokens")
    def list_(tenant: str | None) -> None:
        """Tokens with their tenant, state and last use (never the token itself)."""
        from resources.api_tokens import list_api_tokens

        with _connection() as conn:
            tokens = list_api_tokens(conn, _tenant(tenant) if tenant else None)
        click.echo(f"{'tenant':<24}{'name':<20}{'state':<9}{'created':<27}last used")
        for t in tokens:
            state = "revoked" if t.revoked_at else "active"
            used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "-"
            click.echo(
                f"{t.tenant_id:<24}{t.name:<20}{state:<9}"
                f"{t.created_at.isoformat(timespec='seconds'):<27}{used}"
            )

    @api_tokens.command("revoke")
    @click.argument("tenant")
    @click.argument("name")
    def revoke(tenant: str, name: str) -> None:
        """Revoke TENANT's token NAME at once."""
        from resources.api_tokens import ApiTokenError, revoke_api_token

        try:
            with _connection() as conn:
                revoke_api_token(conn, _tenant(tenant), name)
        except ApiTokenError as exc:
            raise UserError(str(exc)) from None
        click.echo(f"revoked token {name!r} of tenant {tenant}")
