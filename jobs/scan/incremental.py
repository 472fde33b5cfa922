"""What an incremental scan scans, and in which order: an object is skipped when its *latest* row has the listing's
fingerprint, the model's version and the scan's scoring key (an older row with the same fingerprint does not
count: content A, then B, then A again is new). A row without a scoring key (written before schema version 4)
counts as matching it, so upgrading rescans nothing; once a scan writes the key, a change of the weights' bytes
or of a setting that changes a score or a verdict (``pipeline/scoring_key.py``) rescans.

"Latest" is the highest ``scan_id`` (it starts with the driver's UTC start time, or a second after the output's
latest id when that is not earlier: ``jobs/scan/ids.py``), then ``scanned_at``: rows of one scan never share a
URI, and ``scanned_at`` comes from the workers' clocks. The history is reduced to one row per URI in Arrow as it
is read, so the driver's memory follows the number of objects under the source, not the number of scans.

The work is ordered for ``--max-objects``, which takes its head: objects never scanned, then changed ones
(content, model or scoring key), then rescans (``--retry-errors``: errors a retry can change, ``pipeline.errors.
ROW_CODES``; ``--full``) whose latest row is oldest, so capped runs reach new uploads first and do not pick the same
rescans night after night.

An object whose latest row is under the source and kept by the filters, but which the listing no longer returns, was
deleted or renamed: it gets a tombstone row (label ``DELETED``, ``gone``/``tombstones``), which ends its current state.
An object whose latest row is a tombstone counts as never scanned: when it comes back, it is scanned as new.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from jobs.scan.schema import DELETED, SCHEMA_VERSION, VIDEOS_SCHEMA
from pipeline.errors import retryable

COLUMNS = ["uri", "fingerprint", "model_version", "scoring_key", "label", "error_code", "scan_id", "scanned_at"]
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
    """The latest row per URI over ``tables`` (``COLUMNS``), reduced every ``FOLD_ROWS`` rows read; URIs whose latest
    row is a tombstone (``DELETED``) are left out: gone, as if never scanned."""
    latest = empty()
    pending: list[pa.Table] = []
    waiting = 0
    for table in tables:
        table = table if isinstance(table, pa.Table) else pa.Table.from_batches([table])
        pending.append(table.select(COLUMNS).cast(latest.schema))
        waiting += table.num_rows
        if waiting >= max(FOLD_ROWS, latest.num_rows):  # each fold re-sorts `latest`: fold as it doubles, not per 64k
            latest, pending, waiting = latest_per_uri(pa.concat_tables([latest, *pending])), [], 0
    latest = latest_per_uri(pa.concat_tables([latest, *pending])) if pending else latest
    return latest.filter(pc.not_equal(latest.column("label"), DELETED))  # only now: a tombstone hides older rows


def empty() -> pa.Table:
    return pa.schema([VIDEOS_SCHEMA.field(c) for c in COLUMNS]).empty_table()


def uri_prefix(entries: list[dict[str, Any]]) -> str:
    """What every listed URI starts with (the listing is sorted: its first and last URIs suffice)."""
    return os.path.commonprefix([entries[0]["uri"], entries[-1]["uri"]]) if entries else ""


# why an object is scanned, and the rank of each reason in a capped run's order
NEW, CHANGED, SETTINGS, RETRY, FULL = "new", "changed", "settings", "retry", "full"
RANK = {NEW: 0, CHANGED: 1, SETTINGS: 1, RETRY: 2, FULL: 2}
RESCANS = (RETRY, FULL)


def work(entries: list[dict[str, Any]], latest: pa.Table, model_version: str, scoring_key: str | None,
         retry_errors: bool = False, full: bool = False) -> list[tuple[dict[str, Any], str]]:
    """(entry, why) for each entry to scan, in the order a capped run takes them: never scanned (``new``), then
    ``changed`` (fingerprint or model version) and ``settings`` (scoring key), then rescans (``retry``: latest
    row ERROR with ``retry_errors``, of a code a retry can change; ``full``) by their latest ``scan_id``, oldest
    first; else in listing order."""
    if not entries:
        return []
    at = pc.index_in(pa.array([e["uri"] for e in entries], pa.string()), value_set=latest.column("uri"))
    last = latest.take(at)  # a null row where the URI was never scanned
    same = pc.and_(pc.equal(last.column("fingerprint"), pa.array([e["fingerprint"] for e in entries], pa.string())),
                   pc.equal(last.column("model_version"), pa.scalar(model_version, pa.string())))
    keyed = pc.and_kleene(pc.is_valid(last.column("scoring_key")),  # a row without a key matches any
                          pc.not_equal(last.column("scoring_key"), pa.scalar(scoring_key, pa.string())))
    columns = zip(pc.is_valid(at).to_pylist(), pc.fill_null(same, False).to_pylist(),
                  pc.fill_null(keyed, False).to_pylist(), last.column("label").to_pylist(),
                  last.column("error_code").to_pylist(), last.column("scan_id").to_pylist())
    picked = []
    for i, (seen, unchanged, rekeyed, label, code, scan_id) in enumerate(columns):
        why = (NEW if not seen else CHANGED if not unchanged else SETTINGS if rekeyed else FULL if full
               else RETRY if retry_errors and label == "ERROR" and retryable(code) else None)
        if why:
            picked.append((RANK[why], scan_id if why in RESCANS else "", i, why))
    return [(entries[i], why) for _rank, _scan_id, i, why in sorted(picked)]


def gone(latest: pa.Table, listed: list[str], covers: Callable[[str], bool]) -> pa.Table:
    """The rows of ``latest`` whose objects the listing (its URIs: ``listed``) did not return although ``covers``
    says it would have (under the source, kept by the filters, in no folder it failed to read): deleted or renamed."""
    missing = latest.filter(pc.invert(pc.is_in(latest.column("uri"), value_set=pa.array(listed, pa.string()))))
    return missing.filter(pa.array([covers(uri) for uri in missing.column("uri").to_pylist()], pa.bool_()))


def tombstones(rows: pa.Table, scan_id: str, at: datetime) -> pa.Table:
    """``videos`` rows (``VIDEOS_SCHEMA``) that end the objects of ``rows`` (``gone``'s): label ``DELETED``, written
    by scan ``scan_id`` at ``at``, each repeating its last row's fingerprint, model version and scoring key (what was
    deleted); the listing's and the scoring's columns null."""
    n = rows.num_rows
    given = {"schema_version": pa.array([SCHEMA_VERSION] * n, pa.int16()), "scan_id": pa.array([scan_id] * n, pa.string()),
             "label": pa.array([DELETED] * n, pa.string()),
             "scanned_at": pa.array([at] * n, VIDEOS_SCHEMA.field("scanned_at").type),
             **{c: rows.column(c) for c in ("uri", "fingerprint", "model_version", "scoring_key")}}
    return pa.table({f.name: given.get(f.name, pa.nulls(n, f.type)) for f in VIDEOS_SCHEMA}, schema=VIDEOS_SCHEMA)


__all__ = ["COLUMNS", "latest_per_uri", "fold_latest", "uri_prefix", "work", "gone", "tombstones", "RESCANS"]
