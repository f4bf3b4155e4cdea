"""The demo's generated data: fixed ids and a fixed clock, so a re-run publishes the same events."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from orchestration.demo import backfill_days, demo_activities, demo_feedback, demo_now


@pytest.mark.parametrize(
    ("today", "first", "last"),
    [
        (date(2026, 11, 24), date(2026, 11, 17), date(2026, 11, 23)),
        (date(2026, 3, 2), date(2026, 2, 23), date(2026, 3, 1)),  # across a month end
        (date(2028, 3, 1), date(2028, 2, 23), date(2028, 2, 29)),  # leap day
    ],
)
def test_backfill_days_are_the_seven_whole_days_before_today(today, first, last):
    days = backfill_days(today)
    assert (len(days), days[0], days[-1]) == (7, first, last)
    assert today not in days


def test_demo_clock_is_the_start_of_the_hour():
    now = demo_now()
    assert (now.minute, now.second, now.microsecond, now.tzinfo) == (0, 0, 0, UTC)
    assert now <= datetime.now(UTC)


def test_demo_activities_are_deterministic_and_never_in_the_future():
    today = demo_now().date()
    first, again = demo_activities("demo", today, 40), demo_activities("demo", today, 40)
    assert first == again and first
    assert len({a["activity_id"] for a in first}) == len(first)
    assert all(datetime.fromisoformat(a["occurred_at"]) <= demo_now() for a in first)
    assert {a["actor_type"] for a in first} == {"user", "system"}
    # a day's events do not depend on which day the demo runs
    earlier = {a["activity_id"]: a for a in demo_activities("demo", date(2026, 11, 24), 40)}
    later = {a["activity_id"]: a for a in demo_activities("demo", date(2026, 11, 25), 40)}
    shared = set(earlier) & set(later)
    assert shared and all(earlier[k] == later[k] for k in shared)


def test_demo_feedback_has_fixed_ids_over_the_backfill_days():
    today = date(2026, 11, 24)
    items = demo_feedback(today)
    assert items == demo_feedback(today)
    assert len({i["external_id"] for i in items}) == len(items)
    days = {datetime.fromisoformat(i["created_at"]).date() for i in items}
    assert days == set(backfill_days(today))
