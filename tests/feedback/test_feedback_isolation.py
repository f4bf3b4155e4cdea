"""One broken feedback source does not starve the others (issue 14), through the Dagster asset
as the schedule runs it: an unreachable forum listed before healthy ones in other workspaces and
tenants fails on its own, raises exactly one alert per failed pull and shows its last error in
`supportflow sources list`; every healthy source gets all its items."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration.cli import main


@pytest.fixture
def forums():
    """Two sandbox forums over real HTTP, each with its own posts."""
    from sandbox.discourse import DiscourseForum
    from sandbox.discourse import routes as discourse_routes
    from sandbox.server import SandboxConfig, build_app, start_in_thread

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    served, stops = [], []
    for seed, posts in ((21, 45), (22, 30)):
        forum = DiscourseForum(seed=seed, posts=posts, days=5, end=end, page_size=20)
        config = SandboxConfig(extra={"discourse_forum": forum})
        url, stop = start_in_thread(build_app(config, providers=[discourse_routes]))
        served.append((forum, url))
        stops.append(stop)
    yield served
    for stop in stops:
        stop()


def unreachable_url() -> str:
    """A local port nobody listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def pull_everything(dagster_resources) -> dg.ExecuteInProcessResult:
    from assets.feedback.defs import feedback_items

    return dg.materialize(
        [feedback_items],
        resources=dagster_resources,
        run_config={"ops": {"feedback_items": {"config": {"workspace": "", "drain": False}}}},
    )


def alerts_for(db, source: str) -> list[str]:
    rows = db.execute(
        "select summary from control.alerts where source = %s order by alert_id", (source,)
    ).fetchall()
    return [row[0] for row in rows]


def test_unreachable_source_fails_alone_alerts_once_per_pull_and_shows_its_error(
    make_workspace, add_source, dagster_resources, forums, db, capsys
):
    run = uuid.uuid4().hex[:8]
    # listed first (sources are pulled in workspace-name order), in a tenant of its own
    broken_ws = make_workspace(f"a0-{run}")
    options = {"since": "2000-01-01"}
    broken, _ = add_source(
        broken_ws, "discourse", "forum", **options, **{"base-url": unreachable_url()}
    )
    healthy = []
    for index, (forum, url) in enumerate(forums):
        workspace = make_workspace(f"zz-{run}-{index}")
        source, _ = add_source(workspace, "discourse", "forum", **options, **{"base-url": url})
        healthy.append((source, forum))
    alert_source = f"feedback_source:{broken_ws.name}/forum"

    first = pull_everything(dagster_resources)
    assert first.success  # the failure is the source's, alerted on its own
    metadata = first.asset_materializations_for_node("feedback_items")[0].metadata
    assert metadata["sources_failed"].value >= 1
    for source, forum in healthy:
        count = db.execute(
            "select count(*) from raw.feedback_items where source_id = %s", (source.source_id,)
        ).fetchone()[0]
        assert count == len(forum.posts)  # every item, despite the broken source before it
    [summary] = alerts_for(db, alert_source)
    assert f"feedback source {broken_ws.name}/forum (discourse) failed" in summary
    assert "connection error" in summary

    second = pull_everything(dagster_resources)
    assert second.success
    assert len(alerts_for(db, alert_source)) == 2  # exactly one per failed pull

    assert main(["sources", "list", broken_ws.name]) == 0
    out = capsys.readouterr().out
    assert "last error (2 failed pull(s) in a row" in out and "connection error" in out
    assert main(["sources", "list", healthy[0][0].workspace_name]) == 0
    assert "last error" not in capsys.readouterr().out

    # repaired: the next pull takes its items and clears the error
    forum, url = forums[0]
    db.execute(
        "update control.feedback_sources set config = config || jsonb_build_object('base_url', "
        "%s::text) where source_id = %s",
        (url, broken.source_id),
    )
    assert pull_everything(dagster_resources).success
    assert main(["sources", "list", broken_ws.name]) == 0
    assert "last error" not in capsys.readouterr().out
    count = db.execute(
        "select count(*) from raw.feedback_items where source_id = %s", (broken.source_id,)
    ).fetchone()[0]
    assert count == len(forum.posts)
    assert len(alerts_for(db, alert_source)) == 2
