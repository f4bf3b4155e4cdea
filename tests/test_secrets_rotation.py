"""Rotating SUPPORTFLOW_SECRET_KEY: with `NEW,OLD` every stored secret still decrypts, `supportflow
secrets rotate` re-encrypts them all with NEW, and then NEW alone decrypts them."""

from __future__ import annotations

import uuid

import pytest
from cryptography.fernet import Fernet

from orchestration.cli import main
from resources.secrets import SecretBox, SecretError, load_or_create_key


@pytest.fixture
def own_warehouse(db_url, monkeypatch):
    """A database of its own on the test server: a rotation touches every stored secret, so
    it must not meet the secrets other tests stored with keys of their own."""
    import psycopg

    from resources.warehouse import ensure_database, with_database

    name = f"rotation_{uuid.uuid4().hex[:8]}"
    ensure_database(db_url, name)
    url = with_database(db_url, name)
    monkeypatch.setenv("SUPPORTFLOW_DATABASE_URL", url)
    from resources.warehouse import ensure_ready

    ensure_ready(url, None)
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def test_rotate_the_secret_key(own_warehouse, settings, monkeypatch, capsys):
    from assets.tickets.desks import add_desk, get_desk

    db = own_warehouse
    old = load_or_create_key(settings.home).decode()  # the key the session's desks use
    new = Fernet.generate_key().decode()
    name = f"rot-{uuid.uuid4().hex[:8]}"
    add_desk(db, SecretBox(old), name=name, subdomain="rot", token="desk-token-1", email="a@b.c")
    try:
        monkeypatch.setenv("SUPPORTFLOW_SECRET_KEY", f"{new},{old}")
        assert get_desk(db, name).credentials(SecretBox(f"{new},{old}")).secret == "desk-token-1"
        assert main(["secrets", "rotate"]) == 0
        out = capsys.readouterr().out
        assert "re-encrypted" in out and "desk-token-1" not in out
        rotated = get_desk(db, name)
        assert rotated.credentials(SecretBox(new)).secret == "desk-token-1"
        with pytest.raises(SecretError):
            rotated.credentials(SecretBox(old))
    finally:  # back to the session's key
        monkeypatch.setenv("SUPPORTFLOW_SECRET_KEY", f"{old},{new}")
        assert main(["secrets", "rotate"]) == 0
    assert get_desk(db, name).credentials(SecretBox(old)).secret == "desk-token-1"
    monkeypatch.setenv("SUPPORTFLOW_SECRET_KEY", "not-a-key")
    assert main(["secrets", "rotate"]) == 2
    assert "not a valid Fernet key" in capsys.readouterr().err
