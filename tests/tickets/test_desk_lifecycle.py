"""A desk's life without SQL, through the real CLI: rotate, pause, resume, resync, remove."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.tickets.defs import defs as ticket_defs
from assets.tickets.defs import zendesk_desk_sync
from assets.tickets.desks import get_desk
from assets.tickets.rules import DESK_TAG
from orchestration.cli import main
from sandbox.zendesk import SANDBOX_TOKEN, ZendeskSandbox
from tests.tickets.conftest import FAST_LIMITS
from tests.tickets.helpers import assert_matches_truth, zendesk_resource


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def desk_rows(db, desk_id: int) -> dict[str, int]:
    return {
        table: db.execute(
            f"select count(*) from raw.{table} where desk_id = %s",  # noqa: S608 - fixed names
            (desk_id,),
        ).fetchone()[0]
        for table in (
            "zendesk_tickets",
            "zendesk_ticket_comments",
            "zendesk_users",
            "zendesk_groups",
        )
    }


def test_a_rotated_token_is_used_by_the_next_run(
    db, resources, make_desk, run_sync, monkeypatch, capsys
):
    sandbox = ZendeskSandbox(seed=151, tickets=12, comments_per_ticket=2.0, rate_limits=FAST_LIMITS)
    desk = make_desk(sandbox, token="an-old-revoked-token")
    assert not run_sync(desk, raise_on_error=False).success
    assert "401" in get_desk(db, desk.name).last_sync_error

    # A run launched before the rotation carries no credential: the desk is read when it starts.
    defs = dg.Definitions.merge(ticket_defs, dg.Definitions(resources=resources))
    job = defs.resolve_job_def(zendesk_desk_sync.name)
    assert job.get_tags_for_partition_key(desk.name, selected_asset_keys=None) == {
        "dagster/partition": desk.name,
        "dagster/partition_set": f"{zendesk_desk_sync.name}_partition_set",
        DESK_TAG: desk.name,
    }
    assert job.get_run_config_for_partition_key(desk.name) in ({}, {"ops": {}})

    monkeypatch.setenv("ROTATED_ZD_TOKEN", SANDBOX_TOKEN)
    code, out, err = run_cli(
        capsys, "desks", "update", desk.name, "--token-env", "ROTATED_ZD_TOKEN"
    )
    assert code == 0, err
    assert out.strip() == f"updated desk {desk.name}: token" and SANDBOX_TOKEN not in out + err
    assert run_sync(desk).success
    assert get_desk(db, desk.name).last_sync_error is None
    assert_matches_truth(db, desk, sandbox)


def test_update_checks_its_input_and_writes_nothing_on_error(db, make_desk, capsys):
    desk = make_desk(ZendeskSandbox(seed=152, tickets=3))
    before = get_desk(db, desk.name)
    for args, reason in (
        (["--sync-interval", "0"], "0"),
        (["--base-url", "ftp://nope"], "must start with http"),
        ([], "nothing to update"),
        (["--token-env", "SUPPORTFLOW_TEST_UNSET_VARIABLE"], "SUPPORTFLOW_TEST_UNSET_VARIABLE"),
    ):
        code, out, err = run_cli(capsys, "desks", "update", desk.name, *args)
        assert code == 2 and reason in err and len(err.strip().splitlines()) == 1, err
    assert get_desk(db, desk.name) == before
    code, out, err = run_cli(
        capsys, "desks", "update", desk.name, "--sync-interval", "90", "--api-rate", "400"
    )
    assert code == 0, err
    after = get_desk(db, desk.name)
    assert (after.sync_interval_seconds, after.api_rate_per_minute) == (90, 400)
    assert after.token_encrypted == before.token_encrypted
    code, _, err = run_cli(capsys, "desks", "update", "no-such-desk", "--api-rate", "5")
    assert code == 2 and "no desk named 'no-such-desk'" in err


def test_disable_enable_and_remove_with_and_without_purge(db, make_desk, run_sync, capsys):
    sandbox = ZendeskSandbox(seed=153, tickets=20, comments_per_ticket=2.0, rate_limits=FAST_LIMITS)
    desk = make_desk(sandbox)
    other = make_desk(ZendeskSandbox(seed=154, tickets=5, rate_limits=FAST_LIMITS))
    run_sync(desk)
    run_sync(other)
    held = desk_rows(db, desk.desk_id)
    assert held["zendesk_tickets"] == 20 and held["zendesk_ticket_comments"] > 0
    others_before = desk_rows(db, other.desk_id)

    assert run_cli(capsys, "desks", "disable", desk.name)[0] == 0
    assert not get_desk(db, desk.name).active
    assert run_cli(capsys, "desks", "enable", desk.name)[0] == 0
    assert get_desk(db, desk.name).active

    code, _, err = run_cli(capsys, "desks", "remove", desk.name)
    assert code == 2 and "--purge" in err
    assert desk_rows(db, desk.desk_id) == held  # nothing half-done

    code, out, err = run_cli(capsys, "desks", "remove", desk.name, "--purge")
    assert code == 0, err
    assert out.startswith(f"removed desk {desk.name}; deleted {sum(held.values())} rows (")
    for table, count in held.items():
        assert (f"raw.{table} {count}" in out) == bool(count), out
    assert desk_rows(db, desk.desk_id) == {k: 0 for k in held}
    assert db.execute(
        "select count(*) from control.desks where desk_id = %s", (desk.desk_id,)
    ).fetchone() == (0,)
    assert desk_rows(db, other.desk_id) == others_before  # another desk's rows untouched

    empty = make_desk(ZendeskSandbox(seed=155, tickets=2))
    code, out, _ = run_cli(capsys, "desks", "remove", empty.name)
    assert code == 0 and "deleted 0 rows" in out


@pytest.mark.parametrize(("lost", "launched"), [("tickets", "cli"), ("comments", "ui")])
def test_resync_converges_to_what_zendesk_holds(
    db, resources, settings, make_desk, run_sync, capsys, lost, launched
):
    sandbox = ZendeskSandbox(seed=156, tickets=40, comments_per_ticket=2.0, rate_limits=FAST_LIMITS)
    desk = make_desk(sandbox)
    run_sync(desk)
    # Rows lost behind the cursor (a restore, a bad manual fix): an incremental sync never
    # reads them again.
    table = "zendesk_tickets" if lost == "tickets" else "zendesk_ticket_comments"
    removed = db.execute(
        f"delete from raw.{table} where desk_id = %s and ticket_id %% 3 = 0",  # noqa: S608
        (desk.desk_id,),
    ).rowcount
    assert removed > 0
    sandbox.apply_changes(new=3, updated=4, deleted=2, comments=5)
    run_sync(desk)
    assert desk_rows(db, desk.desk_id)[table] < (
        len(sandbox.truth_tickets()) if lost == "tickets" else len(sandbox.truth_comments())
    )

    if launched == "cli":
        code, out, err = run_cli(capsys, "desks", "resync", desk.name)
        assert code == 0, err
        assert get_desk(db, desk.name).ticket_cursor is None
        run_sync(desk)
    else:  # the desk sync job with the launchpad's resync flag, as from the UI
        defs = dg.Definitions.merge(
            ticket_defs,
            dg.Definitions(resources={**resources, "zendesk": zendesk_resource(settings)}),
        )
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("desks", [desk.name])
            result = defs.resolve_job_def(zendesk_desk_sync.name).execute_in_process(
                instance=instance,
                partition_key=desk.name,
                run_config={"ops": {"zendesk_tickets": {"config": {"resync": True}}}},
            )
        assert result.success
        assert result.dagster_run.tags[DESK_TAG] == desk.name
    assert_matches_truth(db, desk, sandbox)
    run_sync(desk)  # and stays there
    assert_matches_truth(db, desk, sandbox)


def test_a_run_queued_before_the_rotation_uses_the_new_token(db, make_desk, monkeypatch, capsys):
    """A desk sync run is created (queued) for the desk's partition as the UI creates one; the
    token is rotated; the run then starts, from the code location itself, and succeeds."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run

    sandbox = ZendeskSandbox(seed=157, tickets=15, comments_per_ticket=2.0, rate_limits=FAST_LIMITS)
    desk = make_desk(sandbox, token="an-old-revoked-token")
    recon = ReconstructableRepository.for_module(
        "orchestration.definitions", "defs"
    ).get_reconstructable_job(zendesk_desk_sync.name)
    job = recon.get_definition()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("desks", [desk.name])
        queued = instance.create_run_for_job(
            job_def=job, tags=job.get_tags_for_partition_key(desk.name, selected_asset_keys=None)
        )
        assert queued.tags[DESK_TAG] == desk.name
        assert "an-old-revoked-token" not in str(queued.run_config) + str(queued.tags)

        monkeypatch.setenv("ROTATED_ZD_TOKEN_2", SANDBOX_TOKEN)
        assert main(["desks", "update", desk.name, "--token-env", "ROTATED_ZD_TOKEN_2"]) == 0
        result = execute_run(recon, instance.get_run_by_id(queued.run_id), instance)
        assert result.success
    assert get_desk(db, desk.name).last_sync_error is None
    assert_matches_truth(db, desk, sandbox)
