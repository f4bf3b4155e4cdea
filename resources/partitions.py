"""What every daily-partitioned or scheduled asset shares: one start day, the days a run's
window covers, and how fresh the UI expects it to be."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

from resources.settings import partitions_start_from_env


def daily_partitions(timezone: str = "UTC") -> dg.DailyPartitionsDefinition:
    """Daily partitions from SUPPORTFLOW_PARTITIONS_START (one setting for every daily set, so
    a fresh install does not show hundreds of days that can never have data)."""
    return dg.DailyPartitionsDefinition(start_date=partitions_start_from_env(), timezone=timezone)


def window_days(context: dg.AssetExecutionContext) -> list[date]:
    """The calendar days of the run's partition window: one day, or a backfill's range run at
    once (`BackfillPolicy`), first to last."""
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return [first + timedelta(days=n) for n in range((end - first).days)]


def fresh_within(schedule_period: timedelta) -> dg.FreshnessPolicy:
    """The freshness an asset its schedule materializes every `schedule_period` promises: a
    warning when one tick was missed, a failure when two were (the UI's health view)."""
    return dg.FreshnessPolicy.time_window(
        fail_window=2 * schedule_period + timedelta(minutes=30),
        warn_window=schedule_period + timedelta(minutes=15),
    )


DAILY_FRESHNESS = fresh_within(timedelta(days=1))
