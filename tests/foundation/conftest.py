"""Fixtures of the foundation tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """moto's server, with test credentials and a default region in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_endpoint
