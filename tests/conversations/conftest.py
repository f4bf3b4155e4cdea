"""Fixtures for the conversations tests: empty conversation and queue tables, the engines, a
throwaway Dagster instance and the domain's definitions bound to the test resources."""

from __future__ import annotations

import pytest

from tests.conversations.helpers import TABLES, conversation_definitions


@pytest.fixture
def conv_tables(db):
    """Empty conversation tables and empty queue tables."""
    db.execute(f"truncate {TABLES} restart identity cascade")
    return db


@pytest.fixture(scope="session")
def engines():
    from assets.conversations.store import Engines

    return Engines.default()


@pytest.fixture
def instance():
    import dagster as dg

    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def conv_defs(resources):
    """The conversations domain with a closure period of 180 minutes, and its sensors."""
    return conversation_definitions(resources, close_after_minutes=180)
