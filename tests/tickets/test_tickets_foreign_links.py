"""The same-origin rule against the Zendesk sandbox over real HTTP: when a response names a
next-page link on another origin (here: another local port), the client refuses it with an error
naming the desk, and that other port receives no connection at all (so no credentials)."""

from __future__ import annotations

import uuid

import pytest

from orchestration.cli import main
from resources.zendesk import Credentials, ZendeskApi, ZendeskError
from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_TOKEN, RateLimits, ZendeskSandbox
from tests.foreign_host import foreign_host


@pytest.fixture
def hostile_account(sandbox_host):
    """A sandbox account whose next-page links point at a foreign host on another port."""
    sandbox = ZendeskSandbox(seed=64, tickets=120, rate_limits=RateLimits(None, None))
    _, base_url = sandbox_host.add(sandbox)
    with foreign_host() as elsewhere:
        sandbox.link_base = elsewhere.url + "/accounts/x"
        yield sandbox, base_url, elsewhere


def desk_api(base_url: str) -> ZendeskApi:
    return ZendeskApi(
        desk="acme",
        base_url=base_url,
        credentials=Credentials("token", SANDBOX_TOKEN, SANDBOX_EMAIL),
        export_rate_per_minute=100_000,
        api_rate_per_minute=100_000,
    )


def test_ticket_export_refuses_an_after_url_on_another_port(hostile_account):
    sandbox, base_url, elsewhere = hostile_account
    pages = []
    with desk_api(base_url) as api, pytest.raises(ZendeskError) as caught:
        for page in api.export_tickets(start_time=0, per_page=50):
            pages.append(page)
    assert len(pages) == 1  # the first page came from the desk's own origin
    message = str(caught.value)
    assert message.startswith("desk 'acme': tickets_export: refusing to follow a link")
    assert elsewhere.url in message and "not on the configured origin" in message
    assert SANDBOX_TOKEN not in message
    assert elsewhere.untouched  # not a connection, let alone the Authorization header
    assert sandbox.requests["tickets_export"] == 1


def test_comment_repair_refuses_a_next_link_on_another_port(hostile_account):
    sandbox, base_url, elsewhere = hostile_account
    ticket_id = max(sandbox.comments, key=lambda t: len(sandbox.comments[t]))
    with desk_api(base_url) as api, pytest.raises(ZendeskError, match="ticket_comments: refusing"):
        api.ticket_comments(ticket_id, page_size=1)
    assert elsewhere.untouched
    assert sandbox.requests["ticket_comments"] == 1


def test_sync_fails_naming_the_desk_and_the_foreign_host_gets_nothing(
    hostile_account, make_desk, run_sync, db
):
    """Through the Dagster assets, as a scheduled sync runs: the run fails, the desk records
    the error, and the foreign host saw nothing."""
    sandbox, _, elsewhere = hostile_account
    desk = make_desk(sandbox)
    result = run_sync(desk, page_size=50, raise_on_error=False)
    assert not result.success
    error = db.execute(
        "select last_sync_error from control.desks where desk_id = %s", (desk.desk_id,)
    ).fetchone()[0]
    assert error.startswith(f"desk {desk.name!r}: tickets_export: refusing to follow a link")
    assert elsewhere.untouched


def _cli_desk(monkeypatch, base_url: str) -> str:
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ZD_TEST_TOKEN", SANDBOX_TOKEN)
    args = ["desks", "add", name, "--subdomain", "sandbox", "--base-url", base_url]
    assert main([*args, "--email", SANDBOX_EMAIL, "--token-env", "ZD_TEST_TOKEN"]) == 0
    return name


def test_sync_command_refusing_a_foreign_link_is_one_line_exit_2(
    hostile_account, monkeypatch, capsys
):
    _, base_url, elsewhere = hostile_account
    name = _cli_desk(monkeypatch, base_url)
    capsys.readouterr()
    assert main(["sync", name, "--page-size", "50"]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"supportflow: error: sync of desk {name} failed: desk {name!r}: ")
    assert "refusing to follow a link" in line and elsewhere.url in line
    assert "Traceback" not in captured.out + captured.err
    assert SANDBOX_TOKEN not in captured.out + captured.err
    assert elsewhere.untouched


def test_sync_command_with_a_malformed_secret_key_names_the_cause(
    hostile_account, monkeypatch, capsys
):
    _, base_url, _ = hostile_account
    name = _cli_desk(monkeypatch, base_url)
    capsys.readouterr()
    monkeypatch.setenv("SUPPORTFLOW_SECRET_KEY", "not-a-fernet-key")
    assert main(["sync", name]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert f"sync of desk {name} failed" in line
    assert "SUPPORTFLOW_SECRET_KEY is not a valid Fernet key" in line
    assert "see log" not in line and "not-a-fernet-key" not in captured.out + captured.err
