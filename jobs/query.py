"""DuckDB over a scan's output: ``query`` (any SQL) and ``report`` (fake rate per prefix and day).

Views on the connection:
- ``videos_history`` / ``faces_history``: every row every scan wrote (``--full`` rescans add rows).
- ``videos``: the latest row of each object (its current verdict).
- ``faces``: the faces of those latest rows.

Remote output (s3://, gs://) is read through fsspec (``con.register_filesystem``): DuckDB's own httpfs
extension would have to be downloaded, which offline machines cannot do.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from datetime import date, datetime
from typing import Any

from jobs.scan_output import PARTITION, SCHEMAS, OutputStore
from jobs.scan_records import read_records, runs_table

log = logging.getLogger(__name__)


class QueryError(Exception):
    """The output cannot be read or the SQL failed (the message is one line, for the operator)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect(output: str, storage_options: dict | None = None):
    """A DuckDB connection with the views above over the scan output at ``output``.

    Any failure to reach or read the output (no credentials, no bucket, a broken part) becomes one
    ``QueryError`` line, not a traceback.
    """
    try:
        return _connect(OutputStore(output, storage_options or {}))
    except QueryError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore, fsspec, duckdb, pyarrow: all mean "cannot read"
        raise QueryError(f"cannot read scan output {output}: {_one_line(exc)}") from None


def _history_view(con, store: OutputStore, table: str, parts: list[str]) -> None:
    """``<table>_history`` over ``parts``; parts that cannot be read are left out with a warning (a scan
    quarantines them; readers may lack write access, so they only skip)."""
    import duckdb

    from jobs.scan_quarantine import unreadable_parts

    def create(paths: list[str]) -> None:
        files = ", ".join(_sql_str(store.uri_of(p)) for p in paths)
        con.execute(f"CREATE OR REPLACE VIEW {table}_history AS SELECT * FROM read_parquet([{files}], "
                    "hive_partitioning = true, union_by_name = true)")
        con.execute(f"SELECT * FROM {table}_history LIMIT 0").fetchall()

    try:
        create(parts)
        return
    except duckdb.Error:
        bad = unreadable_parts(store.fs, parts, table)
        if not bad:
            raise
    for path, why in bad.items():
        log.warning("skipping unreadable part %s (%s); the next scan quarantines it", store.uri_of(path), why)
    good = [p for p in parts if p not in bad]
    if good:
        create(good)
    else:
        _empty_view(con, table)


def _empty_view(con, table: str) -> None:
    import pyarrow as pa

    empty = SCHEMAS[table].append(pa.field(PARTITION, pa.date32())).empty_table()
    con.register(f"_{table}_empty", empty)
    con.execute(f"CREATE OR REPLACE VIEW {table}_history AS SELECT * FROM _{table}_empty")


def _connect(store: OutputStore):
    import duckdb

    con = duckdb.connect()
    if not store.local:
        con.register_filesystem(store.fs)
    found_any = False
    for table in SCHEMAS:
        parts = sorted(store._list_parts(table).values())
        if parts:
            found_any = True
            _history_view(con, store, table, parts)
        else:
            _empty_view(con, table)
    records = read_records(store.fs, store.root)
    con.register("_runs", runs_table(records))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    if not found_any and not records and not store.fs.exists(store.root):
        raise QueryError(f"no scan output at {store.display}")
    con.execute("""
        CREATE VIEW videos AS
        SELECT * EXCLUDE (_rank) FROM (
            SELECT *, row_number() OVER (PARTITION BY uri ORDER BY scanned_at DESC, scan_id DESC) AS _rank
            FROM videos_history)
        WHERE _rank = 1""")
    con.execute("""
        CREATE VIEW faces AS
        SELECT f.* FROM faces_history f
        JOIN (SELECT scan_id, uri FROM videos) v ON f.scan_id = v.scan_id AND f.uri = v.uri""")
    return con


def run_query(output: str, sql: str, storage_options: dict | None = None) -> tuple[list[str], list[tuple]]:
    con = connect(output, storage_options)
    try:
        result = con.execute(sql)
        if result.description is None:
            return [], []
        columns = [d[0] for d in result.description]
        return columns, result.fetchall()
    except Exception as exc:  # noqa: BLE001 - duckdb.Error subclasses, storage errors while reading
        raise QueryError(" ".join(str(exc).split())[:500] or type(exc).__name__) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def format_rows(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """CSV or JSON (a list of objects) text for query results."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else (json.dumps(_jsonable(v)) if isinstance(v, (list, dict)) else _jsonable(v))
                             for v in row])
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(columns, (_jsonable(v) for v in row))) for row in rows], indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r} (table, csv or json)")


def _prefix_expr(depth: int | None) -> str:
    """SQL for an object's prefix: its parent folder, or its first ``depth`` path levels."""
    if depth is None:
        return "regexp_replace(uri, '[^/]*$', '')"
    return f"regexp_extract(uri, '^((?:[A-Za-z0-9+.-]+://)?/?(?:[^/]+/){{0,{int(depth)}}})', 1)"


def report(output: str, storage_options: dict | None = None, top: int = 10, depth: int | None = None,
           runs: int = 10) -> dict[str, Any]:
    """Summary of the latest verdict of every object (totals, fake rate per prefix and day, top suspects)
    and of the last ``runs`` scans. Any failure is one ``QueryError`` line."""
    con = connect(output, storage_options)
    try:
        return _report(con, output, storage_options, top, depth, runs)
    except Exception as exc:  # noqa: BLE001 - a part that breaks mid-read, storage errors
        raise QueryError(f"cannot report on {output}: {_one_line(exc)}") from None


_RUN_COLUMNS = ("scan_id", "status", "exit_code", "started_at", "ended_at", "listed", "skipped", "scanned",
                "failed", "error_rate", "quarantined", "message")


def _report(con, output: str, storage_options: dict | None, top: int, depth: int | None, runs: int) -> dict[str, Any]:
    recent = con.execute(f"""
        SELECT scan_id, status, exit_code, started_at, ended_at, listed, skipped, scanned, failed, error_rate,
               len(quarantined), message
        FROM runs ORDER BY started_at DESC, scan_id DESC LIMIT {int(runs)}""").fetchall()
    last_success = con.execute("SELECT max(ended_at) FROM runs WHERE status = 'succeeded'").fetchone()[0]
    totals = con.execute("""
        SELECT count(*), count(*) FILTER (label = 'FAKE'), count(*) FILTER (label = 'REAL'),
               count(*) FILTER (label = 'NO_FACE'), count(*) FILTER (label = 'ERROR'),
               min(scanned_at), max(scanned_at), count(DISTINCT model_version)
        FROM videos""").fetchone()
    by_prefix = con.execute(f"""
        SELECT {_prefix_expr(depth)} AS prefix, {PARTITION} AS day, count(*) AS objects,
               count(*) FILTER (label = 'FAKE') AS fakes, count(*) FILTER (label = 'REAL') AS reals,
               count(*) FILTER (label = 'NO_FACE') AS no_face, count(*) FILTER (label = 'ERROR') AS errors,
               count(*) FILTER (label = 'FAKE') / nullif(count(*) FILTER (label IN ('FAKE', 'REAL')), 0) AS fake_rate
        FROM videos GROUP BY ALL ORDER BY prefix, day""").fetchall()
    suspects = con.execute(f"""
        SELECT uri, score, label, faces, tracks, model_version, {PARTITION}
        FROM videos WHERE score IS NOT NULL ORDER BY score DESC, uri LIMIT {int(top)}""").fetchall()
    errors = con.execute("""
        SELECT error, count(*) AS objects FROM videos WHERE label = 'ERROR'
        GROUP BY error ORDER BY objects DESC, error LIMIT 10""").fetchall()
    return {
        "output": OutputStore(output, storage_options or {}).display,
        "objects": totals[0], "fakes": totals[1], "reals": totals[2], "no_face": totals[3], "errors": totals[4],
        "fake_rate": (totals[1] / (totals[1] + totals[2])) if (totals[1] + totals[2]) else None,
        "first_scan": _jsonable(totals[5]), "last_scan": _jsonable(totals[6]), "model_versions": totals[7],
        "by_prefix_day": [dict(zip(("prefix", "day", "objects", "fakes", "reals", "no_face", "errors", "fake_rate"),
                                   map(_jsonable, row))) for row in by_prefix],
        "top_suspicious": [dict(zip(("uri", "score", "label", "faces", "tracks", "model_version", "day"),
                                    map(_jsonable, row))) for row in suspects],
        "top_errors": [{"error": e, "objects": n} for e, n in errors],
        "last_success": _jsonable(last_success),
        "runs": [dict(zip(_RUN_COLUMNS, map(_jsonable, row))) for row in recent],
    }


def storage_options_for_output(output: str, endpoint_url: str | None = None, anon: bool = False,
                               profile: str | None = None) -> dict:
    from jobs.scan import storage_options_for

    return storage_options_for(output, endpoint_url, anon, profile)


__all__ = ["connect", "run_query", "format_rows", "report", "QueryError"]
