"""Fixtures for the analytics tests: a login role holding supportflow_analyst."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql


@pytest.fixture
def analyst_login(db) -> str:
    """A throwaway login role granted supportflow_analyst; dropped afterwards."""
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    db.execute(
        sql.SQL("create role {} login in role supportflow_analyst").format(sql.Identifier(name))
    )
    yield name
    db.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
    db.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


@pytest.fixture
def analyst_conn(db_url, analyst_login):
    """An autocommit connection to the warehouse as the analyst login."""
    with psycopg.connect(db_url, user=analyst_login, autocommit=True) as conn:
        yield conn
