"""Fixtures for the analytics tests: login roles holding the analyst roles."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql


def _login_role(db, group: str):
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    db.execute(
        sql.SQL("create role {} login in role {}").format(
            sql.Identifier(name), sql.Identifier(group)
        )
    )
    yield name
    db.execute("delete from control.analyst_tenants where role_name = %s", (name,))
    db.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
    db.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


@pytest.fixture
def analyst_login(db) -> str:
    """A throwaway login role granted supportflow_analyst; dropped afterwards."""
    yield from _login_role(db, "supportflow_analyst")


@pytest.fixture
def tenant_analyst_login(db) -> str:
    """A throwaway login role granted supportflow_tenant_analyst (no tenants yet)."""
    yield from _login_role(db, "supportflow_tenant_analyst")


@pytest.fixture
def analyst_conn(db_url, analyst_login):
    """An autocommit connection to the warehouse as the analyst login."""
    with psycopg.connect(db_url, user=analyst_login, autocommit=True) as conn:
        yield conn
