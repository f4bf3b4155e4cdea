"""Where the platform keeps input it refused for good: `control.rejected_input`.

A provider's webhook whose signature held but whose content can never be stored or read (what
PostgreSQL `jsonb` cannot hold, a field of the wrong type, an event over the queue's size limit)
is answered 4xx at once, so the provider stops retrying, and kept here byte for byte with the
reason, for an operator to look at. Neither a `jsonb` dead-letter table nor an SQS dead-letter
queue can hold such bytes, so this table serves both queue backends. Rows may carry personal
data (recipient addresses), so they are kept `REJECTED_INPUT_DAYS` days, like the email domain's
personal data, and pruned by the daily queue maintenance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

REJECTED_INPUT_DAYS = 7


@dataclass(frozen=True)
class RejectedInput:
    rejected_id: int
    received_at: datetime
    source: str
    queue: str | None
    reason: str
    body_sha256: str
    body: bytes


def keep_rejected_input(
    conn: Any, *, source: str, reason: str, body: bytes, queue: str | None = None
) -> int:
    """Store a refused body with its reason; returns its id."""
    row = conn.execute(
        "insert into control.rejected_input (source, queue, reason, body_sha256, body) "
        "values (%s, %s, %s, %s, %s) returning rejected_id",
        (source, queue, reason[:2000], hashlib.sha256(body).hexdigest(), body),
    ).fetchone()
    return int(row[0])


def recent_rejected_input(conn: Any, limit: int = 100) -> list[RejectedInput]:
    """The newest refused bodies first."""
    rows = conn.execute(
        "select rejected_id, received_at, source, queue, reason, body_sha256, body "
        "from control.rejected_input order by rejected_id desc limit %s",
        (limit,),
    ).fetchall()
    return [RejectedInput(*row[:-1], bytes(row[-1])) for row in rows]


def prune_rejected_input(conn: Any, older_than_days: int = REJECTED_INPUT_DAYS) -> int:
    """Forget refused bodies older than the window; returns how many went."""
    cur = conn.execute(
        "delete from control.rejected_input where received_at < now() - make_interval(days => %s)",
        (older_than_days,),
    )
    return cur.rowcount
