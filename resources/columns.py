"""Column schemas for the UI: every column of a table asset with its type and what it holds."""

import dagster as dg


def table_schema(*columns: tuple[str, str, str]) -> dg.TableSchema:
    """A `dagster/column_schema` from (name, PostgreSQL type, description) triples."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name, kind, description=about) for name, kind, about in columns]
    )
