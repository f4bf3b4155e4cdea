"""Fixtures for the tickets domain: sandbox Zendesk accounts over real HTTP, desks pointing at
them, an in-process sync, and the comparison with the sandbox's ground truth."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import dagster as dg
import pytest

from sandbox.server import SandboxConfig, build_app, start_in_thread
from sandbox.zendesk import (
    SANDBOX_EMAIL,
    SANDBOX_OAUTH_TOKEN,
    SANDBOX_TOKEN,
    RateLimits,
    ZendeskSandbox,
)
from tests.tickets.helpers import SANDBOXES, zendesk_resource

FAST_LIMITS = RateLimits(export_per_minute=600, api_per_minute=6000)


class SandboxHost:
    """One sandbox server hosting named accounts at /accounts/<name>."""

    def __init__(self) -> None:
        self.accounts: dict[str, ZendeskSandbox] = {}
        self.base_url, self.stop = start_in_thread(
            build_app(SandboxConfig(extra={"zendesk_accounts": self.accounts}))
        )

    def add(self, sandbox: ZendeskSandbox, name: str | None = None) -> tuple[str, str]:
        """Host `sandbox`; returns (account name, its base URL)."""
        name = name or f"acct-{uuid.uuid4().hex[:8]}"
        self.accounts[name] = sandbox
        base_url = f"{self.base_url}/accounts/{name}"
        SANDBOXES[base_url] = sandbox
        return name, base_url


@pytest.fixture(scope="session")
def sandbox_host() -> Iterator[SandboxHost]:
    host = SandboxHost()
    yield host
    host.stop()


@pytest.fixture(scope="session")
def secret_box(settings):
    from resources.secrets import SecretBox

    return SecretBox.from_settings(settings.secret_key, settings.home)


@pytest.fixture
def make_desk(db, secret_box, sandbox_host) -> Callable:
    """Register a desk for a sandbox account (unique name); returns the Desk."""
    from assets.tickets.desks import add_desk

    def make(
        sandbox: ZendeskSandbox,
        *,
        oauth: bool = False,
        token: str | None = None,
        export_rate: int = 600,
        api_rate: int = 6000,
        interval: int = 300,
    ):
        _, base_url = sandbox_host.add(sandbox)
        name = f"desk-{uuid.uuid4().hex[:10]}"
        return add_desk(
            db,
            secret_box,
            name=name,
            subdomain="sandbox",
            base_url=base_url,
            email=None if oauth else SANDBOX_EMAIL,
            token=token or (SANDBOX_OAUTH_TOKEN if oauth else SANDBOX_TOKEN),
            oauth=oauth,
            tenant_id=f"tenant-{name}",
            sync_interval_seconds=interval,
            export_rate_per_minute=export_rate,
            api_rate_per_minute=api_rate,
        )

    return make


@pytest.fixture
def run_sync(resources, settings) -> Callable:
    """Materialize one desk's partition in process; returns the ExecuteInProcessResult."""
    from assets.tickets.defs import DESK_PARTITIONS, zendesk_ticket_comments, zendesk_tickets

    instance = dg.DagsterInstance.ephemeral()

    def run(desk, *, page_size: int = 1000, timeout: float = 30.0, raise_on_error: bool = True):
        if not instance.has_dynamic_partition(DESK_PARTITIONS.name, desk.name):
            instance.add_dynamic_partitions(DESK_PARTITIONS.name, [desk.name])
        return dg.materialize(
            [zendesk_tickets, zendesk_ticket_comments],
            partition_key=desk.name,
            instance=instance,
            resources={
                **resources,
                "zendesk": zendesk_resource(settings, page_size=page_size, timeout=timeout),
            },
            raise_on_error=raise_on_error,
        )

    run.instance = instance  # the Dagster instance the runs are recorded in
    return run
