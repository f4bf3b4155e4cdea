"""Fixtures for the feedback tests: unique workspaces, a sandbox Discourse forum and the webhook
service, each over real HTTP (uvicorn in a background thread)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest


@pytest.fixture
def workspace_name() -> str:
    return f"ws-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def warehouse(resources):
    return resources["warehouse"]


@pytest.fixture
def make_workspace(warehouse):
    """Create a workspace (tenant = its name unless given) and return it."""
    from assets.feedback.store import create_workspace

    def make(name: str | None = None, tenant: str | None = None):
        with warehouse.connection() as conn:
            return create_workspace(conn, name or f"ws-{uuid.uuid4().hex[:10]}", tenant)

    return make


@pytest.fixture
def add_source(warehouse):
    """Add a source of a kind to a workspace; returns (SourceRef, values shown once)."""
    from assets.feedback.rules import SourceRef
    from assets.feedback.sources import source_kind
    from assets.feedback.store import add_source as store_add_source

    def add(workspace, kind: str, name: str | None = None, **options):
        kind_ = source_kind(kind)
        config = kind_.build_config(options)
        with warehouse.connection() as conn:
            source_id = store_add_source(conn, workspace, name or kind, kind, config)
            ref = SourceRef(
                source_id,
                workspace.workspace_id,
                workspace.name,
                workspace.tenant_id,
                name or kind,
                kind,
                config,
                {},
            )
            shown = kind_.after_create(conn, ref)
        return ref, shown

    return add


@pytest.fixture
def forum():
    from sandbox.discourse import DiscourseForum

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return DiscourseForum(seed=11, posts=120, days=10, end=end - timedelta(days=1), page_size=20)


@pytest.fixture
def forum_url(forum):
    """The real sandbox server (sandbox.server) serving only the Discourse provider."""
    from sandbox.discourse import routes as discourse_routes
    from sandbox.server import SandboxConfig, build_app, start_in_thread

    config = SandboxConfig(extra={"discourse_forum": forum})
    base_url, stop = start_in_thread(build_app(config, providers=[discourse_routes]))
    yield base_url
    stop()


@pytest.fixture
def webhook_url(settings, resources):
    """The real webhook service with every registered route provider."""
    from webhooks.app import WebhookService, create_app, serve_in_thread

    service = WebhookService(
        settings=settings, queues=resources["queues"], warehouse=resources["warehouse"]
    )
    with serve_in_thread(create_app(service)) as base_url:
        yield base_url


@pytest.fixture
def dagster_resources(resources):
    from resources.discourse import DiscourseClient

    return {
        **resources,
        "discourse": DiscourseClient(timeout_seconds=10, backoff_base_seconds=0.01),
    }


@pytest.fixture
def feedback_queue(request, resources):
    """The postgres queues, emptied (shared tables: other domains' tests also truncate them);
    for a test in both shapes on SQS, that shape's queues (its own, empty)."""
    if "platform" in request.fixturenames and request.getfixturevalue("platform").is_aws:
        return resources["queues"]
    return request.getfixturevalue("pg_queues")
