"""What an incremental scan skips: an object whose *latest* row has the listing's fingerprint and the model's
version (an older row with the same fingerprint does not count: content A, then B, then A again is new).

"Latest" is the highest ``scan_id`` (it starts with the driver's UTC start time, ``driver.new_scan_id``), then
``scanned_at``: rows of one scan never share a URI, and ``scanned_at`` comes from the workers' clocks. The
history is reduced to one row per URI in Arrow as it is read, so the driver's memory follows the number of
objects under the source, not the number of scans.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

COLUMNS = ["uri", "fingerprint", "model_version", "label", "scan_id", "scanned_at"]
LATEST_FIRST = [("uri", "ascending"), ("scan_id", "descending"), ("scanned_at", "descending")]
FOLD_ROWS = 1 << 16  # rows read between two reductions


def latest_per_uri(table: pa.Table) -> pa.Table:
    """One row per ``uri``: its latest (sorted by ``uri``)."""
    if table.num_rows < 2:
        return table
    table = table.sort_by(LATEST_FIRST)
    uris = table.column("uri").combine_chunks()
    first = pa.concat_arrays([pa.array([True]), pc.not_equal(uris[1:], uris[:-1])])
    return table.filter(first)


def fold_latest(tables: Iterable[pa.Table | pa.RecordBatch]) -> pa.Table:
    """The latest row per URI over ``tables`` (``COLUMNS``), reduced every ``FOLD_ROWS`` rows read."""
    latest = empty()
    pending: list[pa.Table] = []
    waiting = 0
    for table in tables:
        table = table if isinstance(table, pa.Table) else pa.Table.from_batches([table])
        pending.append(table.select(COLUMNS).cast(latest.schema))
        waiting += table.num_rows
        if waiting >= max(FOLD_ROWS, latest.num_rows):  # each fold re-sorts `latest`: fold as it doubles, not per 64k
            latest, pending, waiting = latest_per_uri(pa.concat_tables([latest, *pending])), [], 0
    return latest_per_uri(pa.concat_tables([latest, *pending])) if pending else latest


def empty() -> pa.Table:
    from jobs.scan.schema import VIDEOS_SCHEMA

    return pa.schema([VIDEOS_SCHEMA.field(c) for c in COLUMNS]).empty_table()


def uri_prefix(entries: list[dict[str, Any]]) -> str:
    """What every listed URI starts with (the listing is sorted: its first and last URIs suffice)."""
    return os.path.commonprefix([entries[0]["uri"], entries[-1]["uri"]]) if entries else ""


def unchanged(entries: list[dict[str, Any]], latest: pa.Table, model_version: str, retry_errors: bool) -> list[bool]:
    """Per entry: whether its latest row has its fingerprint and ``model_version`` (and, with ``retry_errors``,
    is not ERROR), i.e. whether it may be skipped."""
    if not entries or not latest.num_rows:
        return [False] * len(entries)
    at = pc.index_in(pa.array([e["uri"] for e in entries], pa.string()), value_set=latest.column("uri"))
    last = latest.take(at)  # a null row where the URI was never scanned
    same = pc.and_(pc.equal(last.column("fingerprint"), pa.array([e["fingerprint"] for e in entries], pa.string())),
                   pc.equal(last.column("model_version"), pa.scalar(model_version, pa.string())))
    if retry_errors:
        same = pc.and_(same, pc.not_equal(last.column("label"), pa.scalar("ERROR", pa.string())))
    return pc.fill_null(same, False).to_pylist()


__all__ = ["COLUMNS", "latest_per_uri", "fold_latest", "uri_prefix", "unchanged"]
