"""`supportflow desks add|list|disable` and `sync` through the real CLI entry point, and the
desk asset checks (freshness, comments without tickets)."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from assets.tickets.defs import (
    desk_freshness_job,
    desks_synced_recently,
    stale_desks,
    zendesk_ticket_comments,
    zendesk_tickets,
)
from orchestration.cli import main
from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_TOKEN, RateLimits, ZendeskSandbox
from tests.tickets.helpers import zendesk_resource


def unique(prefix="cli"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_desks_add_stores_the_token_encrypted_and_never_prints_it(
    monkeypatch, capsys, db, secret_box
):
    name = unique()
    monkeypatch.setenv("ZD_TEST_TOKEN", "super-secret-token-123")
    code = main(
        [
            "desks",
            "add",
            name,
            "--subdomain",
            "acme",
            "--email",
            "a@acme.example",
            "--token-env",
            "ZD_TEST_TOKEN",
            "--sync-interval",
            "120",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"added desk {name}" in out and "super-secret-token-123" not in out + err
    stored, base_url, interval = db.execute(
        "select token_encrypted, base_url, sync_interval_seconds from control.desks "
        "where name = %s",
        (name,),
    ).fetchone()
    assert b"super-secret-token-123" not in bytes(stored)
    assert secret_box.decrypt(bytes(stored)) == "super-secret-token-123"
    assert base_url == "https://acme.zendesk.com" and interval == 120

    assert main(["desks", "list"]) == 0
    out, _ = capsys.readouterr()
    assert name in out and "super-secret-token-123" not in out
    assert main(["desks", "disable", name]) == 0
    assert (
        db.execute("select active from control.desks where name = %s", (name,)).fetchone()[0]
        is False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--subdomain", "acme", "--email", "a@b.c", "--token-env", "ZD_UNSET_VAR"],
            "ZD_UNSET_VAR is not set or empty",
        ),
        (
            ["--subdomain", "acme", "--email", "a@b.c", "--token-env", "ZD_EMPTY_VAR"],
            "ZD_EMPTY_VAR is not set or empty",
        ),
        (["--subdomain", "acme", "--token-env", "ZD_TEST_TOKEN"], "--token-env needs --email"),
        (["--subdomain", "acme"], "exactly one of --token-env"),
        (
            ["--subdomain", "not a domain", "--oauth-token-env", "ZD_TEST_TOKEN"],
            "not a Zendesk subdomain",
        ),
        (
            ["--subdomain", "acme", "--oauth-token-env", "ZD_TEST_TOKEN", "--base-url", "ftp://x"],
            "must start with http",
        ),
    ],
)
def test_desks_add_bad_input_is_one_line_exit_2(monkeypatch, capsys, args, message):
    monkeypatch.setenv("ZD_TEST_TOKEN", "tok")
    monkeypatch.setenv("ZD_EMPTY_VAR", "  ")
    monkeypatch.delenv("ZD_UNSET_VAR", raising=False)
    assert main(["desks", "add", unique(), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_duplicate_bad_name_and_unknown_desk(monkeypatch, capsys):
    monkeypatch.setenv("ZD_TEST_TOKEN", "tok")
    name = unique()
    assert (
        main(["desks", "add", name, "--subdomain", "acme", "--oauth-token-env", "ZD_TEST_TOKEN"])
        == 0
    )
    assert (
        main(["desks", "add", name, "--subdomain", "acme", "--oauth-token-env", "ZD_TEST_TOKEN"])
        == 2
    )
    assert "already exists" in capsys.readouterr().err
    assert (
        main(
            [
                "desks",
                "add",
                "Bad Name",
                "--subdomain",
                "acme",
                "--oauth-token-env",
                "ZD_TEST_TOKEN",
            ]
        )
        == 2
    )
    assert "lowercase" in capsys.readouterr().err
    assert main(["desks", "disable", unique("missing")]) == 2
    assert main(["sync", unique("missing")]) == 2
    assert "no desk named" in capsys.readouterr().err


def test_sync_command_prints_counts(monkeypatch, capsys, sandbox_host, db):
    sandbox = ZendeskSandbox(
        seed=71, tickets=150, comments_per_ticket=2.0, rate_limits=RateLimits(600, 6000)
    )
    _, base_url = sandbox_host.add(sandbox)
    name = unique("sync")
    monkeypatch.setenv("ZD_TEST_TOKEN", SANDBOX_TOKEN)
    assert (
        main(
            [
                "desks",
                "add",
                name,
                "--subdomain",
                "sandbox",
                "--base-url",
                base_url,
                "--email",
                SANDBOX_EMAIL,
                "--token-env",
                "ZD_TEST_TOKEN",
                "--export-rate",
                "600",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["sync", name]) == 0
    out = capsys.readouterr().out
    assert f"desk {name}: tickets 150 seen, 150 new" in out
    assert "comments 300 new" in out
    # the run is in the platform's instance (the UI's), with the desk's tag and partition
    records = dg.DagsterInstance.get().get_run_records(
        filters=dg.RunsFilter(tags={"supportflow/desk": name})
    )
    assert len(records) == 1
    run = records[0].dagster_run
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == name


def test_freshness_and_orphan_checks(db, resources, settings, make_desk, run_sync):
    sandbox = ZendeskSandbox(seed=72, tickets=20, rate_limits=RateLimits(600, 6000))
    desk = make_desk(sandbox, interval=60)
    assert desk.name in dict(stale_desks(db))  # never synced
    run_sync(desk)
    assert desk.name not in dict(stale_desks(db))
    # one transaction: its now() is the same for the update and the check, so exactly 600 s
    with db.transaction():
        db.execute(
            "update control.desks set last_synced_at = now() - interval '10 minutes' "
            "where desk_id = %s",
            (desk.desk_id,),
        )
        assert "last synced 600 s ago" in dict(stale_desks(db))[desk.name]
    result = desks_synced_recently(warehouse=resources["warehouse"])
    assert not result.passed and desk.name in result.metadata["stale_desks"].value
    job = dg.Definitions(
        assets=[zendesk_tickets, zendesk_ticket_comments],
        asset_checks=[desks_synced_recently],
        jobs=[desk_freshness_job],
        resources={"warehouse": resources["warehouse"], "zendesk": zendesk_resource(settings)},
    ).resolve_job_def("desk_freshness_check")
    (evaluation,) = job.execute_in_process().get_asset_check_evaluations()
    assert not evaluation.passed and desk.name in evaluation.metadata["stale_desks"].value

    # a comment whose ticket is missing fails the orphan check on the next sync
    db.execute(
        "insert into raw.zendesk_ticket_comments "
        "(desk_id, tenant_id, comment_id, ticket_id, raw_data) values (%s, %s, 1, 999999, '{}')",
        (desk.desk_id, desk.tenant_id),
    )
    result = run_sync(desk)
    (check,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "comment_tickets_exist"
    ]
    assert not check.passed and check.metadata["comments_without_ticket"].value == 1
    assert (
        db.execute(
            "select count(*) from control.desks "
            "where desk_id = %s and last_synced_at > now() - interval '1 minute'",
            (desk.desk_id,),
        ).fetchone()[0]
        == 1
    )


def test_sync_command_failure_names_the_desk(monkeypatch, capsys, sandbox_host):
    sandbox = ZendeskSandbox(seed=73, tickets=10, rate_limits=RateLimits(600, 6000))
    _, base_url = sandbox_host.add(sandbox)
    name = unique("fail")
    monkeypatch.setenv("ZD_TEST_TOKEN", "not-the-token")
    args = ["desks", "add", name, "--subdomain", "sandbox", "--base-url", base_url]
    assert main([*args, "--email", SANDBOX_EMAIL, "--token-env", "ZD_TEST_TOKEN"]) == 0
    capsys.readouterr()
    assert main(["sync", name]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()  # one line; the full log is in the run's log
    assert f"sync of desk {name} failed" in line and "401" in line
    assert "Traceback" not in captured.out + captured.err
    assert "not-the-token" not in captured.out + captured.err
