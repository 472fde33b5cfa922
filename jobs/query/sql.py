"""DuckDB over a scan's output: the views ``query`` (one read-only statement) and ``report`` read.

Views on the connection:
- ``videos_history`` / ``faces_history``: every row every scan wrote (``--full`` rescans add rows, tombstones too).
- ``videos``: the latest row of each object (its current verdict), objects whose latest row is a tombstone (label
  ``DELETED``: gone from the source) left out.
- ``faces``: the faces of those latest rows.

Only committed parts are read: a ``faces`` part without its ``videos`` twin (a crash or a commit in flight,
``jobs/scan/output.py``) is left out. A folder with no manifest, no parts and no run records is no scan output.

Remote output (s3://, gs://) is read through fsspec (``con.register_filesystem``): DuckDB's own httpfs
extension would have to be downloaded, which offline machines cannot do. The connection reads no file outside the
output and loads no extension (``_duckdb``). Parts whose data cannot be decoded are left out and the read run again
(``skip_unreadable``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import weakref
from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa

from jobs.query.errors import QueryError, QueryStopped, failure, sql_error
from jobs.query.readonly import check_read_only
from jobs.query.stop import QueryStop, Stopped, in_worker
from jobs.scan.output import OutputStore
from jobs.scan.schema import DELETED, MANIFEST, PARTITION, SCHEMAS
from jobs.scan.records import RUNS_DIR, read_records, runs_table
from pipeline.errors import one_line

log = logging.getLogger(__name__)


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
        raise failure(f"cannot read scan output {output}: {one_line(exc)}") from None


_GLOB = re.compile(r"([*?\[])")


def _duckdb_path(store: OutputStore, path: str) -> str:
    """A part's path as DuckDB is given it. DuckDB globs every path, and a remote one through fsspec, which reads
    ``s3://bucket/out[1]/…`` as a pattern that matches nothing: there glob characters are bracketed (``[[]``) to
    stand for themselves. Local paths DuckDB finds as they are."""
    uri = store.uri_of(path)
    return uri if store.local else _GLOB.sub(r"[\1]", uri)


SKIPPING = "skipping unreadable part %s (%s); the next scan quarantines it"  # readers may lack write access


def _history_view(con, store: OutputStore, table: str, parts: list[str]) -> None:
    """``<table>_history`` over ``parts``; parts that cannot be read are left out with a warning (a scan
    quarantines them; readers may lack write access, so they only skip)."""
    import duckdb

    from jobs.scan.quarantine import unreadable_parts

    def create(paths: list[str]) -> None:
        files = ", ".join(_sql_str(_duckdb_path(store, p)) for p in paths)
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
        log.warning(SKIPPING, store.uri_of(path), why)
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


def _committed_parts(store: OutputStore, skip: dict[str, str] | None = None) -> dict[str, list[str]]:
    """table → its committed parts but those in ``skip`` (URIs): a ``faces`` part counts only beside its ``videos``
    twin (the commit record), so a skipped ``videos`` part takes its twin, as a scan's quarantine does."""
    skip = skip or {}
    videos = {name: path for name, path in store.list_parts("videos").items() if store.uri_of(path) not in skip}
    faces = {name: path for name, path in store.list_parts("faces").items()
             if name in videos and store.uri_of(path) not in skip}
    return {"videos": sorted(videos.values()), "faces": sorted(faces.values())}


# DuckDB's errors for data it cannot decode: its message names no file ("Variable-length int over 10 bytes" is a
# bare duckdb.Error). Errors in the SQL, storage errors (IOException: a network failure would only fail again on
# every part) and the rest name their cause already.
_DATA_ERRORS = ("Error", "InvalidInputException", "InternalException", "SerializationException")


def unreadable_data(output: str, storage_options: dict | None = None) -> dict[str, str]:
    """part URI → why, for the committed parts whose data (not only the footer) cannot be read: each part is read
    whole, once (``jobs.scan.quarantine.unreadable_parts``, as a scan checks them); a storage failure stops the search
    (``StorageUnreadable``)."""
    from jobs.scan.quarantine import unreadable_parts

    store = OutputStore(output, storage_options or {})
    return {store.uri_of(path): why for table, paths in _committed_parts(store).items()
            for path, why in unreadable_parts(store.fs, paths, table, whole=True).items()}


def _unreadable_after(output: str, storage_options: dict | None, exc: Exception) -> dict[str, str]:
    """``unreadable_data`` when ``exc`` is DuckDB failing to decode data, else none."""
    import duckdb

    if not (isinstance(exc, duckdb.Error) and type(exc).__name__ in _DATA_ERRORS):
        return {}
    try:
        return unreadable_data(output, storage_options)
    except Exception as again:  # noqa: BLE001 - the storage failing now: the first error stands
        log.debug("cannot look for the unreadable part: %s", one_line(again))
        return {}


def _named(bad: dict[str, str]) -> str:
    named = ", ".join(f"{uri} ({why})" for uri, why in list(bad.items())[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"unreadable part{'s' if len(bad) > 1 else ''}: {named}{more}"


def read_failure(output: str, storage_options: dict | None, exc: Exception, message: str) -> QueryError:
    """QueryError ``message`` for a read that failed with ``exc``; when DuckDB could not decode some data, it also
    names the part(s) whose data is unreadable."""
    bad = _unreadable_after(output, storage_options, exc)
    return failure(f"{message}; {_named(bad)}" if bad else message)


def skip_unreadable(con, output: str, storage_options: dict | None, exc: Exception, message: str,
                    skipped: dict[str, str]) -> None:
    """After a read of ``con``'s views failed with ``exc``: leave out of its ``*_history`` views the parts whose data
    cannot be decoded (``unreadable_data``: DuckDB's error names none), each named in a warning, so that the read can
    run again and answer from the rest, as past a part whose footer is bad (``_history_view``). ``skipped``: the parts
    left out by an earlier call, updated here. Raises QueryError ``message`` instead when there is no such part, or
    when some were left out already: a read is retried once (every part was read looking for them)."""
    if skipped:
        raise failure(f"{message} (after leaving out {_named(skipped)})") from None
    bad = _unreadable_after(output, storage_options, exc)
    if not bad:
        raise failure(message) from None
    for uri, why in bad.items():
        log.warning(SKIPPING, uri, why)
    skipped.update(bad)
    try:
        _views(con, OutputStore(output, storage_options or {}), skip=skipped)
    except Exception as again:  # noqa: BLE001 - the storage failing now: one line, as any read
        raise failure(f"{message}; {_named(bad)}; {one_line(again)}") from None


def _duckdb(store: OutputStore | None = None):
    """A DuckDB connection that reads files under ``store``'s root only (None: no file at all) and never installs or
    loads an extension: ``query`` runs its user's SQL there, and DuckDB's table functions read any file
    (``read_text('/etc/passwd')``, ``glob('/root/*')``) and download extensions into ~/.duckdb on first use. A remote
    output is read through fsspec (``register_filesystem``). The order matters: DuckDB takes no
    ``allowed_directories`` once external access is off."""
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET temp_directory = $1", [_spill_folder(con)])
    if store is not None and not store.local:
        con.register_filesystem(store.fs)
    # the root as the views name its parts, and as DuckDB names what they match (its checks see both)
    roots = {store.uri_of(store.root), _duckdb_path(store, store.root)} if store else set()
    con.execute("SET allowed_directories = $1", [sorted(f"{root}/" for root in roots)])
    con.execute("SET enable_external_access = false")
    # TIMESTAMPTZ values come back in the session's zone, which is the host's by default; every reader labels
    # times UTC
    con.execute("SET TimeZone = 'UTC'")
    return con


def _spill_folder(con) -> str:
    """Where DuckDB spills what does not fit in memory: ``spill`` in a new 0700 folder under the temp dir, removed with
    the connection (DuckDB makes and removes ``spill`` itself). Its default, ``.tmp`` in the current directory,
    fails where that is read-only and leaves the output's rows wherever the command ran. "": no temp dir to write,
    no spilling (a query larger than memory fails)."""
    try:
        folder = tempfile.mkdtemp(prefix="deepfakestream-duckdb-")
    except OSError:
        return ""
    weakref.finalize(con, shutil.rmtree, folder, True)
    return os.path.join(folder, "spill")


def _views(con, store: OutputStore, skip: dict[str, str] | None = None) -> bool:
    """The ``*_history`` views over the committed parts but those in ``skip`` (URIs); whether there is any part."""
    found_any = False
    for table, parts in _committed_parts(store, skip or {}).items():
        if parts:
            found_any = True
            _history_view(con, store, table, parts)
        else:
            _empty_view(con, table)
    return found_any


def _connect(store: OutputStore):
    con = _duckdb(store)
    found_any = _views(con, store)
    records = read_records(store.fs, store.root)
    con.register("_runs", runs_table(records))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    # a folder that merely exists (the parent of outputs, a file given as -o) is not an output with 0 objects
    if not found_any and not records and not any(store.fs.exists(f"{store.root}/{name}") for name in (MANIFEST, RUNS_DIR)):
        raise failure(f"no scan output at {store.display}")
    _latest_views(con)
    return con


def _latest_views(con) -> None:
    """``videos`` and ``faces``, the latest verdicts, over the ``*_history`` views."""
    # latest as the scan's skip rule has it (jobs/scan/incremental.py): scan_id starts with the driver's clock,
    # scanned_at is each worker's own; an object whose latest row is a tombstone is gone (after the ranking: the
    # tombstone hides its older rows)
    con.execute(f"""
        CREATE VIEW videos AS
        SELECT * EXCLUDE (_rank) FROM (
            SELECT *, row_number() OVER (PARTITION BY uri ORDER BY scan_id DESC, scanned_at DESC) AS _rank
            FROM videos_history)
        WHERE _rank = 1 AND label <> '{DELETED}'""")
    con.execute("""
        CREATE VIEW faces AS
        SELECT f.* FROM faces_history f
        JOIN (SELECT scan_id, uri FROM videos) v ON f.scan_id = v.scan_id AND f.uri = v.uri""")


def _fails_without_data(sql: str) -> bool:
    """Whether ``sql`` fails on empty views too: the user's own mistake (``error('x')``, a bad literal), which no
    part is to blame for, so no part is read whole looking for one."""
    import duckdb

    con = _duckdb()  # no file: the user's SQL runs here too
    for table in SCHEMAS:
        _empty_view(con, table)
    con.register("_runs", runs_table([]))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    _latest_views(con)
    con.execute("SET lock_configuration = true")  # as where it failed: enable_logging fails here too
    try:
        con.execute(sql).fetchall()
    except duckdb.Error:
        return True
    finally:
        con.close()
    return False


BATCH_ROWS = 10_000  # rows fetched and written at a time: what an export holds in memory, whatever its size


def _batches(output: str, sql: str, storage_options: dict | None, stop: QueryStop, batch_rows: int) -> Iterator[list]:
    """The column names, then the rows of ``sql`` ``batch_rows`` at a time as DuckDB streams them (run in a worker:
    ``stop`` interrupts the connection)."""
    con = connect(output, storage_options)
    try:
        con.execute("SET enable_progress_bar = false")  # DuckDB draws it on stdout, into a CSV or JSON export
        con.execute("SET lock_configuration = true")  # the views exist: nothing the user's SQL runs may change settings
        stop.bind(con)
        if stop.halted:  # stopped while the output was listed
            return
        skipped: dict[str, str] = {}  # parts whose data cannot be read, left out of the views (skip_unreadable)
        columns, rows_out = None, False
        while True:
            try:
                result = con.execute(sql)
                if columns is None:
                    columns = [d[0] for d in result.description or ()]
                    yield columns
                while result.description is not None and (rows := result.fetchmany(batch_rows)):
                    rows_out = True
                    yield rows
                return
            except Exception as exc:  # noqa: BLE001 - duckdb.Error subclasses, storage errors while reading
                if stop.halted:  # DuckDB's "Interrupted!": the reader says why, or wants no more rows
                    raise
                if _fails_without_data(sql):
                    raise sql_error(exc) from None
                if rows_out:  # rows are out already: too late to answer from the other parts
                    raise read_failure(output, storage_options, exc, str(sql_error(exc))) from None
                skip_unreadable(con, output, storage_options, exc, str(sql_error(exc)), skipped)
    finally:
        stop.bind(None)
        con.close()


@contextmanager
def stream_query(output: str, sql: str, storage_options: dict | None = None, timeout: float | None = None,
                 batch_rows: int = BATCH_ROWS) -> Iterator[tuple[list[str], Iterator[list[tuple]]]]:
    """``(columns, batches)`` of ``sql`` over the output: lists of at most ``batch_rows`` rows, read as they are
    consumed, so an export of millions of rows holds a batch or two. Ctrl-C, SIGTERM or ``timeout`` seconds (listing,
    reading and the consumer's writing all count) stop it with ``QueryStopped``; any other failure is one
    ``QueryError`` line."""
    check_read_only(sql)  # before reading anything: refused SQL costs no listing
    with QueryStop(timeout) as stop:
        items = in_worker(lambda: _batches(output, sql, storage_options, stop, batch_rows), stop)

        def batches() -> Iterator[list[tuple]]:
            try:
                yield from items
            except Stopped as exc:
                raise QueryStopped(str(exc), exc.status) from None

        rows = batches()
        try:
            yield next(rows), rows
        finally:
            rows.close()
            items.close()


def run_query(output: str, sql: str, storage_options: dict | None = None,
              timeout: float | None = None) -> tuple[list[str], list[tuple]]:
    """The columns and every row of ``sql`` in memory (``stream_query`` for exports)."""
    with stream_query(output, sql, storage_options, timeout) as (columns, batches):
        return columns, [row for rows in batches for row in rows]


__all__ = ["connect", "run_query", "stream_query", "read_failure", "skip_unreadable", "unreadable_data"]
