"""What every daily-partitioned asset shares: the days a run's partition window covers."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg


def window_days(context: dg.AssetExecutionContext) -> list[date]:
    """The calendar days of the run's partition window: one day, or a backfill's range run at
    once (`BackfillPolicy`), first to last."""
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return [first + timedelta(days=n) for n in range((end - first).days)]
