"""Small tables as pandas frames: a query's rows, and the Markdown preview the Dagster UI shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import psycopg


def query_frame(
    conn: psycopg.Connection,
    query: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The rows of a query (values always bound as parameters), named by its columns."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description or []])


def markdown_head(table: pd.DataFrame, rows: int, rest: str, **to_markdown: Any) -> str:
    """The first `rows` rows of `table` as Markdown, then how many more there are, as
    "_N more {rest}._" (`rest` names what they are and where)."""
    shown = table.head(rows)
    more = len(table) - len(shown)
    return shown.to_markdown(index=False, **to_markdown) + (
        f"\n\n_{more} more {rest}._" if more else ""
    )
