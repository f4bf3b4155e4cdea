"""The daily activity export: one day's dashboard (user) activities of every tenant, written per
tenant as Parquet and CSV to `activities/tenant=<t>/date=<YYYY-MM-DD>/` of the export storage.

The day is streamed, never held whole: PostgreSQL sorts the day's partition by tenant and time
and sends it with `COPY ... TO STDOUT` (CSV); pyarrow parses that stream in record batches, and
each batch is cut at tenant boundaries into that tenant's Parquet and CSV writers. Files are
written to a local temporary directory and moved into the storage atomically when the tenant is
complete, so a reader never sees half a file.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from assets.activities.store import begin_day_export, finish_day_export
from resources.storage import ExportStorage

PARQUET_NAME = "activities.parquet"
CSV_NAME = "activities.csv"

# Columns of the export files, in order. occurred_at travels as epoch microseconds (exact and
# independent of the session's time zone) and becomes a UTC timestamp in the files.
EXPORT_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("activity_id", pa.string()),
        ("ticket_id", pa.int64()),
        ("actor_id", pa.string()),
        ("action", pa.string()),
        ("category", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("details", pa.string()),
    ]
)
_WIRE_TYPES = {field.name: field.type for field in EXPORT_SCHEMA}
_WIRE_TYPES["occurred_at"] = pa.int64()

_EXPORT_QUERY = """
copy (
    select tenant_id, activity_id, ticket_id, actor_id, action, category,
           (extract(epoch from occurred_at) * 1000000)::bigint,
           details::text
    from raw.activities
    where occurred_at >= {start} and occurred_at < {end} and actor_type = 'user'
    order by tenant_id, occurred_at, activity_id
) to stdout (format csv)
"""


def export_copy_query(day: date) -> sql.Composed:
    """The `COPY ... TO STDOUT` of one day's user activities, sorted by tenant and time."""
    start, end = day_bounds(day)
    return sql.SQL(_EXPORT_QUERY).format(start=sql.Literal(start), end=sql.Literal(end))


def export_dir(tenant_id: str, day: date) -> str:
    """Where one tenant's files for one day go, relative to the export storage."""
    return f"activities/tenant={tenant_id}/date={day.isoformat()}"


@dataclass(frozen=True)
class TenantExport:
    tenant_id: str
    day: date
    rows: int
    parquet_uri: str
    csv_uri: str


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (what pyarrow's CSV reader wants)."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks: Iterator[bytes | memoryview] = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _to_export_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    columns = [
        batch.column(name).cast(EXPORT_SCHEMA.field(name).type)
        if name == "occurred_at"
        else batch.column(name)
        for name in EXPORT_SCHEMA.names
    ]
    return pa.RecordBatch.from_arrays(columns, schema=EXPORT_SCHEMA)


class _TenantFiles:
    """The open Parquet and CSV writers of one tenant, in a local staging directory."""

    def __init__(self, staging: Path, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.rows = 0
        self.dir = staging / tenant_id  # tenant ids are path-safe (validated on arrival)
        self.dir.mkdir()
        self.parquet = pq.ParquetWriter(self.dir / PARQUET_NAME, EXPORT_SCHEMA, compression="zstd")
        self.csv = pacsv.CSVWriter(self.dir / CSV_NAME, EXPORT_SCHEMA)

    def write(self, batch: pa.RecordBatch) -> None:
        self.parquet.write_batch(batch)
        self.csv.write_batch(batch)
        self.rows += batch.num_rows

    def publish(self, storage: ExportStorage, day: date) -> TenantExport:
        self.parquet.close()
        self.csv.close()
        base = export_dir(self.tenant_id, day)
        parquet_uri = storage.write_file(f"{base}/{PARQUET_NAME}", self.dir / PARQUET_NAME)
        csv_uri = storage.write_file(f"{base}/{CSV_NAME}", self.dir / CSV_NAME)
        shutil.rmtree(self.dir, ignore_errors=True)
        return TenantExport(self.tenant_id, day, self.rows, parquet_uri, csv_uri)


def _tenant_runs(batch: pa.RecordBatch) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Cut a batch sorted by tenant into (tenant, rows of that tenant) pieces."""
    tenants = batch.column("tenant_id")
    if batch.num_rows == 0:
        return
    changes = pc.indices_nonzero(pc.not_equal(tenants[1:], tenants[:-1])).to_pylist()
    starts = [0, *(i + 1 for i in changes)]
    ends = [*starts[1:], batch.num_rows]
    for start, end in zip(starts, ends, strict=True):
        yield tenants[start].as_py(), batch.slice(start, end - start)


def export_day(
    conn: psycopg.Connection,
    storage: ExportStorage,
    day: date,
    *,
    block_size: int = 8 << 20,
) -> list[TenantExport]:
    """Write `day`'s user activities of every tenant; returns one entry per tenant written.

    Tenants without user activities that day get no files, and the files an earlier export of
    the day wrote for them are removed, so the day's files always equal the table. Runs in the
    caller's transaction, which records the export (`begin_day_export`) before it reads.
    """
    previous_tenants = begin_day_export(conn, day)
    query = export_copy_query(day)
    exports: list[TenantExport] = []
    staging = Path(tempfile.mkdtemp(prefix="sf-activity-export-"))
    current: _TenantFiles | None = None
    try:
        with conn.cursor() as cur, cur.copy(query) as copy:
            stream = io.BufferedReader(_ChunkReader(copy), buffer_size=1 << 20)
            # a day without user activities: COPY sends nothing, which Arrow cannot open
            reader = (
                pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(
                        column_names=list(_WIRE_TYPES), block_size=block_size
                    ),
                    # no newlines_in_values: every text column is validated printable on
                    # arrival and jsonb's text form escapes newlines, so blocks split safely
                    convert_options=pacsv.ConvertOptions(
                        column_types=_WIRE_TYPES, strings_can_be_null=False
                    ),
                )
                if stream.peek(1)
                else ()
            )
            for wire_batch in reader:
                for tenant_id, piece in _tenant_runs(_to_export_batch(wire_batch)):
                    if current is None or current.tenant_id != tenant_id:
                        if current is not None:
                            exports.append(current.publish(storage, day))
                        current = _TenantFiles(staging, tenant_id)
                    current.write(piece)
        if current is not None:
            exports.append(current.publish(storage, day))
            current = None
        written = {e.tenant_id for e in exports}
        for tenant_id in sorted(previous_tenants - written):
            for name in (PARQUET_NAME, CSV_NAME):
                storage.delete(f"{export_dir(tenant_id, day)}/{name}")
        finish_day_export(conn, day, sorted(written))
    finally:
        if current is not None:
            current.parquet.close()
            current.csv.close()
        shutil.rmtree(staging, ignore_errors=True)
    return exports
