"""DuckDB over a scan's output: the views ``query`` (one read-only statement) and ``report`` read.

Views on the connection:
- ``videos_history`` / ``faces_history``: every row every scan wrote (``--full`` rescans add rows).
- ``videos``: the latest row of each object (its current verdict).
- ``faces``: the faces of those latest rows.

Only committed parts are read: a ``faces`` part without its ``videos`` twin (a crash or a commit in flight,
``jobs/scan/output.py``) is left out. A folder with no manifest, no parts and no run records is no scan output.

Remote output (s3://, gs://) is read through fsspec (``con.register_filesystem``): DuckDB's own httpfs
extension would have to be downloaded, which offline machines cannot do.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa

from pipeline.logsafe import printable, redact_uris
from jobs.scan.output import OutputStore
from jobs.scan.schema import MANIFEST, PARTITION, SCHEMAS
from jobs.scan.records import RUNS_DIR, read_records, runs_table
from pipeline.errors import DeepfakeStreamError, one_line

log = logging.getLogger(__name__)


class QueryError(DeepfakeStreamError):
    """The output cannot be read or the SQL failed (the message is one line, for the operator)."""

    code = "query_failed"


def _failure(message: str) -> QueryError:
    """QueryError ``message`` as the operator sees it: no credentials in its URIs (the output as typed, a part's
    URI), no control characters (a corrupt part's bytes end up in DuckDB's message)."""
    return QueryError(printable(redact_uris(message)))


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
        raise _failure(f"cannot read scan output {output}: {one_line(exc)}") from None


def _history_view(con, store: OutputStore, table: str, parts: list[str]) -> None:
    """``<table>_history`` over ``parts``; parts that cannot be read are left out with a warning (a scan
    quarantines them; readers may lack write access, so they only skip)."""
    import duckdb

    from jobs.scan.quarantine import unreadable_parts

    def create(paths: list[str]) -> None:
        files = ", ".join(_sql_str(store.uri_of(p)) for p in paths)
        source = f"read_parquet([{files}], hive_partitioning = true, union_by_name = true)"
        # columns that every part lacks (older schema versions: videos.error_code, faces.thumb_jpeg) read as
        # null of the column's own type, so the SQL that works on a new output works on an old one
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        added = "".join(f", CAST(NULL AS {kind}) AS \"{name}\"" for name, kind in _column_types(con, table).items()
                        if name not in present)
        con.execute(f"CREATE OR REPLACE VIEW {table}_history AS SELECT *{added} FROM {source}")
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


def _column_types(con, table: str) -> dict[str, str]:
    """DuckDB's type for each column of ``table``'s schema (jobs/scan/output.py), as DuckDB reads Arrow."""
    con.register(f"_{table}_schema", SCHEMAS[table].empty_table())
    try:
        return {name: kind for name, kind, *_ in con.execute(f"DESCRIBE _{table}_schema").fetchall()}
    finally:
        con.unregister(f"_{table}_schema")


def _empty_view(con, table: str) -> None:
    empty = SCHEMAS[table].append(pa.field(PARTITION, pa.date32())).empty_table()
    con.register(f"_{table}_empty", empty)
    con.execute(f"CREATE OR REPLACE VIEW {table}_history AS SELECT * FROM _{table}_empty")


def _committed_parts(store: OutputStore) -> dict[str, list[str]]:
    """table → its committed parts: a ``faces`` part counts only beside its ``videos`` twin (the commit record)."""
    videos = store.list_parts("videos")
    parts = {table: store.list_parts(table) if table != "videos" else videos for table in SCHEMAS}
    parts["faces"] = {name: path for name, path in parts["faces"].items() if name in videos}
    return {table: sorted(found.values()) for table, found in parts.items()}


# DuckDB's errors for data it cannot decode: its message names no file ("Variable-length int over 10 bytes" is a
# bare duckdb.Error). Errors in the SQL, storage errors (IOException: a network failure would only fail again on
# every part) and the rest name their cause already.
_DATA_ERRORS = ("Error", "InvalidInputException", "InternalException", "SerializationException")


def unreadable_data(output: str, storage_options: dict | None = None) -> dict[str, str]:
    """part URI → why, for the committed parts whose data (not only the footer) cannot be read: each part is read
    whole, once (``jobs.scan.quarantine.confirmed_read``); a storage failure stops the search (``StorageUnreadable``)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    from jobs.scan.quarantine import confirmed_read

    store = OutputStore(output, storage_options or {})
    paths = [p for parts in _committed_parts(store).values() for p in parts]
    pool = ThreadPoolExecutor(max_workers=4)  # a part in memory per thread
    try:
        whys = list(pool.map(lambda p: confirmed_read(store.fs, p, lambda f: pq.read_table(f).num_rows)[1], paths))
    finally:
        pool.shutdown(cancel_futures=True)
    return {store.uri_of(p): why for p, why in zip(paths, whys) if why}


def read_failure(output: str, storage_options: dict | None, exc: Exception, message: str) -> QueryError:
    """QueryError ``message`` for a read that failed with ``exc``; when DuckDB could not decode some data, it also
    names the part(s) whose data is unreadable."""
    import duckdb

    if isinstance(exc, duckdb.Error) and type(exc).__name__ in _DATA_ERRORS:
        try:
            bad = unreadable_data(output, storage_options)
        except Exception as again:  # noqa: BLE001 - the storage failing now: the first error stands
            log.debug("cannot look for the unreadable part: %s", one_line(again))
            bad = {}
        if bad:
            named = ", ".join(f"{uri} ({why})" for uri, why in list(bad.items())[:3])
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            message += f"; unreadable part{'s' if len(bad) > 1 else ''}: {named}{more}"
    return _failure(message)


def _connect(store: OutputStore):
    import duckdb

    con = duckdb.connect()
    # TIMESTAMPTZ values come back in the session's zone, which is the host's by default; every reader labels
    # times UTC
    con.execute("SET TimeZone = 'UTC'")
    if not store.local:
        con.register_filesystem(store.fs)
    found_any = False
    for table, parts in _committed_parts(store).items():
        if parts:
            found_any = True
            _history_view(con, store, table, parts)
        else:
            _empty_view(con, table)
    records = read_records(store.fs, store.root)
    con.register("_runs", runs_table(records))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    # a folder that merely exists (the parent of outputs, a file given as -o) is not an output with 0 objects
    if not found_any and not records and not any(store.fs.exists(f"{store.root}/{name}") for name in (MANIFEST, RUNS_DIR)):
        raise _failure(f"no scan output at {store.display}")
    _latest_views(con)
    return con


def _latest_views(con) -> None:
    """``videos`` and ``faces``, the latest verdicts, over the ``*_history`` views."""
    # latest as the scan's skip rule has it (jobs/scan/incremental.py): scan_id starts with the driver's clock,
    # scanned_at is each worker's own
    con.execute("""
        CREATE VIEW videos AS
        SELECT * EXCLUDE (_rank) FROM (
            SELECT *, row_number() OVER (PARTITION BY uri ORDER BY scan_id DESC, scanned_at DESC) AS _rank
            FROM videos_history)
        WHERE _rank = 1""")
    con.execute("""
        CREATE VIEW faces AS
        SELECT f.* FROM faces_history f
        JOIN (SELECT scan_id, uri FROM videos) v ON f.scan_id = v.scan_id AND f.uri = v.uri""")


def _fails_without_data(sql: str) -> bool:
    """Whether ``sql`` fails on empty views too: the user's own mistake (``error('x')``, a bad literal), which no
    part is to blame for, so no part is read whole looking for one."""
    import duckdb

    con = duckdb.connect()
    for table in SCHEMAS:
        _empty_view(con, table)
    con.register("_runs", runs_table([]))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    _latest_views(con)
    try:
        con.execute(sql).fetchall()
    except duckdb.Error:
        return True
    finally:
        con.close()
    return False


def _sql_error(exc: Exception) -> QueryError:
    return _failure(" ".join(str(exc).split())[:500] or type(exc).__name__)


READ_ONLY = "one read-only statement (SELECT, WITH … SELECT, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"


def _keywords(sql: str) -> set[str]:
    """The SQL keywords of ``sql`` as DuckDB's tokenizer reads them (comments and strings are other tokens)."""
    import duckdb

    tokens = duckdb.tokenize(sql)
    ends = [start for start, _ in tokens[1:]] + [len(sql)]
    return {sql[start:end].strip().upper() for (start, kind), end in zip(tokens, ends) if kind.name == "keyword"}


def check_read_only(sql: str) -> None:
    """QueryError unless ``sql`` is exactly one statement that only reads.

    ``query`` and ``report`` only read (docs/scan.md), but DuckDB runs COPY … TO, CREATE, ATTACH, SET or several
    statements as readily (a COPY into the output rewrote its verdicts). DuckDB types DESCRIBE, SHOW and SUMMARIZE
    as SELECT; PRAGMA and CALL are refused (some write or change settings; ``SELECT * FROM pragma_version()``
    reads the same), and EXPLAIN without ANALYZE (which runs what it explains; plain EXPLAIN only plans). The
    keywords come from DuckDB's tokenizer, not a pattern: a comment must not hide one. ``run_query`` also locks
    DuckDB's configuration, so a table function that changes it (``enable_logging`` writes files) is refused.
    """
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
        kinds = [s.type.name for s in statements]
        if kinds == ["EXPLAIN"]:
            kinds = ["EXPLAIN ANALYZE" if _keywords(sql) & {"ANALYZE", "ANALYSE"} else "SELECT"]
    except duckdb.Error as exc:  # a syntax error: the line executing it would give
        raise _sql_error(exc) from None
    if not kinds:
        raise QueryError(f"no SQL to run: give {READ_ONLY}")
    if len(kinds) > 1:
        raise QueryError(f"query takes {READ_ONLY}; got {len(kinds)} statements")
    if kinds != ["SELECT"]:
        raise QueryError(f"query takes {READ_ONLY}; got {kinds[0]}")


def run_query(output: str, sql: str, storage_options: dict | None = None) -> tuple[list[str], list[tuple]]:
    check_read_only(sql)  # before reading anything: refused SQL costs no listing
    con = connect(output, storage_options)
    con.execute("SET lock_configuration = true")  # the views exist: nothing the user's SQL runs may change settings
    try:
        result = con.execute(sql)
        if result.description is None:
            return [], []
        columns = [d[0] for d in result.description]
        return columns, result.fetchall()
    except Exception as exc:  # noqa: BLE001 - duckdb.Error subclasses, storage errors while reading
        if _fails_without_data(sql):
            raise _sql_error(exc) from None
        raise read_failure(output, storage_options, exc, str(_sql_error(exc))) from None


def jsonable(value: Any) -> Any:
    """A DuckDB value as JSON can hold it: times as ISO text, intervals as seconds, decimals as numbers,
    bytes (thumbnails) as base64, anything else unknown as its text."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):  # `now() - max(ended_at)`: the age checks monitoring runs
        return value.total_seconds()
    if isinstance(value, Decimal):  # `SELECT 0.5` is a DECIMAL in DuckDB
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # UUID, and whatever else a query can return


def format_rows(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """CSV or JSON (a list of objects) text for query results."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else (json.dumps(jsonable(v)) if isinstance(v, (list, dict)) else jsonable(v))
                             for v in row])
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(columns, (jsonable(v) for v in row))) for row in rows], indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r} (table, csv or json)")


__all__ = ["connect", "run_query", "check_read_only", "format_rows", "QueryError", "jsonable", "read_failure",
           "unreadable_data"]
