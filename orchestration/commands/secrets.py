"""`supportflow secrets rotate`: re-encrypt every secret stored in the warehouse with the newest
key of `SUPPORTFLOW_SECRET_KEY` (desk tokens in `control.desks`, Discourse API keys in
`control.feedback_sources.config`), so the old key can be dropped. Plaintext never leaves this
process and is never printed."""

from __future__ import annotations

from typing import Any

import click

from orchestration.commands import UserError, load_settings


def rotate_stored_secrets(conn: Any, box: Any) -> tuple[int, int]:
    """Re-encrypt in the caller's transaction; returns (desk tokens, source keys) rotated."""
    desks = conn.execute(
        "select desk_id, token_encrypted from control.desks order by desk_id for update"
    ).fetchall()
    for desk_id, token in desks:
        conn.execute(
            "update control.desks set token_encrypted = %s, updated_at = now() where desk_id = %s",
            (box.rotate(token), desk_id),
        )
    sources = conn.execute(
        "select source_id, config->>'api_key_encrypted' from control.feedback_sources "
        "where config ? 'api_key_encrypted' order by source_id for update"
    ).fetchall()
    for source_id, encrypted in sources:
        conn.execute(
            "update control.feedback_sources "
            "set config = jsonb_set(config, '{api_key_encrypted}', to_jsonb(%s::text)) "
            "where source_id = %s",
            (box.rotate(encrypted.encode()).decode(), source_id),
        )
    return len(desks), len(sources)


def register(cli: click.Group) -> None:
    @cli.group()
    def secrets() -> None:
        """Secrets stored encrypted in the warehouse."""

    @secrets.command("rotate")
    def secrets_rotate() -> None:
        """Re-encrypt every stored secret with the first key of SUPPORTFLOW_SECRET_KEY
        (set it to NEW,OLD first); all or nothing."""
        from resources.runtime import warehouse_url
        from resources.secrets import SecretBox, SecretError
        from resources.warehouse import get_pool

        settings = load_settings()
        try:
            box = SecretBox.from_settings(settings.secret_key, settings.home)
            with get_pool(warehouse_url(settings)).connection() as conn:
                desks, sources = rotate_stored_secrets(conn, box)
        except SecretError as exc:
            raise UserError(f"{exc}; nothing was changed") from None
        click.echo(
            f"re-encrypted {desks} desk token(s) and {sources} source API key(s) with the "
            "newest key; the older key(s) can be removed from SUPPORTFLOW_SECRET_KEY now"
        )
