"""Run records: ``DEST/_runs/<scan_id>.json``, one per scan, written at start ("running") and at the end.

They are what a nightly job is monitored by: a night with nothing new still writes one, so "no
``succeeded`` record for 26 h" is a sound staleness alert, and the exit status, error classes and
quarantined parts are kept with the output rather than only on a pod's stdout. A scan killed outright cannot
end its own record, nor can one whose output refused its final record (a full disk): the next scan, which holds
the lease and so knows neither is running, ends it as ``killed`` (``close_unfinished``), only if the record is
still the ``running`` one it read (compare-and-swap, ``jobs/scan/cas.py``): a scan that was only slow ends its
own record, and that word stands.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from jobs.scan.cas import Contended, locked, read_tagged, write_if
from pipeline.errors import WORKER_LOST, one_line

log = logging.getLogger(__name__)

RUNS_DIR = "_runs"
_GLOB = re.compile(r"[*?\[]")
RECORD_VERSION = 1

Status = Literal["running", "succeeded", "too_many_errors", "aborted", "interrupted", "terminated",
                 "not_started", "output_error", "busy", "lease_lost", "killed"]


class RunRecord(BaseModel):
    """One scan. Counts are of this run only; ``scanned``, ``lost``, ``labels``, ``errors`` count the rows it committed."""

    record_version: int = RECORD_VERSION
    scan_id: str
    status: Status = "running"
    exit_code: int | None = None
    error_code: str | None = None  # the stable code of why it did not succeed (pipeline/errors.py); null if it did
    message: str | None = None
    source: str
    output: str
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    started_at: datetime
    ended_at: datetime | None = None
    elapsed_s: float | None = None
    model_version: str
    settings_digest: str
    scoring_key: str | None = None  # pipeline/scoring_key.py: the key of the rows this run wrote
    options: dict[str, Any] = Field(default_factory=dict)
    plan: dict[str, Any] = Field(default_factory=dict)
    listed: int = 0
    unlisted: int = 0  # left out of the listing: folders it could not read, names that are not UTF-8
    skipped: int = 0
    deferred: int = 0
    rescored: int = 0
    deleted: int = 0  # objects gone from the source that it marked with a tombstone row (label DELETED)
    deletions_held: int = 0  # gone too, but not marked: past scan.max_deleted_share of the source at once
    scanned: int = 0
    lost: int = 0
    parts: int = 0
    labels: dict[str, int] = Field(default_factory=dict)
    errors: dict[str, int] = Field(default_factory=dict)
    error_rate: float | None = None
    quarantined: list[str] = Field(default_factory=list)
    # its scan held the lease and ended every record left running before it (close_all_unfinished): nothing older can
    # still say running, so a later scan reads no further back (since_last_sweep)
    swept: bool = False


def settings_digest(settings: BaseModel) -> str:
    """A short hash of every model setting: two runs with the same digest scored the same way. The scan's
    own options (``scan``) are left out: the run record lists those that matter in ``options``."""
    return hashlib.sha256(settings.model_dump_json(exclude={"scan"}).encode()).hexdigest()[:16]


def record_bytes(record: RunRecord) -> bytes:
    return (record.model_dump_json(indent=2) + "\n").encode()


def write_record(store: Any, record: RunRecord) -> None:
    """A scan's own record (running, then its end), whole (``store.put``; ``OutputError`` when refused). Under
    DEST's lock on local folders, so it lands before or after ``close_unfinished``'s read and write, never between."""
    with locked(store.fs, store.root):
        store.put(f"{RUNS_DIR}/{record.scan_id}.json", record_bytes(record))


def record_paths(fs: Any, root: str) -> list[str]:
    """The run records' paths under ``root`` (``_runs/<scan_id>.json``), a listing without reading one."""
    base = f"{root}/{RUNS_DIR}"
    fs.invalidate_cache(base)
    try:
        return [p for p in fs.find(base) if p.endswith(".json") and not os.path.basename(p).startswith(".")]
    except FileNotFoundError:
        return []


def record_id(path: str) -> str:
    return os.path.basename(path)[: -len(".json")]


def read_records(fs: Any, root: str) -> list[RunRecord]:
    """Every readable run record under ``root``, newest first; unreadable ones are skipped with a warning."""
    return read_record_files(fs, record_paths(fs, root))


def read_record_files(fs: Any, paths: list[str]) -> list[RunRecord]:
    """The readable run records at ``paths`` (``record_paths``'), newest first; unreadable ones are skipped with a
    warning."""
    if not paths:
        return []
    # fsspec's cat reads a list of paths as globs: a folder named like "out[1]" would match nothing
    globbed = [p for p in paths if not _GLOB.search(p)]
    contents = fs.cat(globbed, on_error="return") if globbed else {}
    for path in (p for p in paths if _GLOB.search(p)):
        try:
            contents[path] = fs.cat_file(path)
        except OSError as exc:
            contents[path] = exc
    records = []
    for path, data in contents.items():
        try:
            if isinstance(data, Exception):
                raise data
            records.append(RunRecord.model_validate(json.loads(data)))
        except (ValidationError, ValueError, OSError) as exc:
            log.warning("skipping unreadable run record %s: %s", path, one_line(exc, 200))
    return sorted(records, key=lambda r: (r.started_at, r.scan_id), reverse=True)


def tally(videos: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(rows by label, ``ERROR`` rows by ``error_code``) of a ``videos`` table: what a run record counts (its
    ``DELETED`` rows are tombstones: ``deleted``, not ``scanned`` nor ``labels``)."""
    import pyarrow.compute as pc

    def counts(column: Any) -> dict[str, int]:
        return {v["values"]: v["counts"] for v in pc.value_counts(column).to_pylist()}

    errors = videos.filter(pc.equal(videos.column("label"), "ERROR")).column("error_code")
    return counts(videos.column("label")), {k or "error": n for k, n in counts(errors).items()}


def committed(store: Any, scan_id: str) -> tuple[dict[str, Any], datetime | None]:
    """A run record's counts of what scan ``scan_id`` committed, read from its ``videos`` parts (``parts`` alone
    when they cannot be read: the next scan quarantines such a part), and the last time those show it at work: its
    parts' latest modification, its rows' latest ``scanned_at`` (None without parts)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from jobs.scan.schema import DELETED, TS

    paths = [p for name, p in sorted(store.list_parts("videos").items()) if name.startswith(f"part-{scan_id}-")]
    if not paths:
        return {"parts": 0}, None
    times = []
    for path in paths:
        try:
            times.append(store.fs.modified(path))  # answered from the listing on object stores
        except Exception as exc:  # noqa: BLE001 - a store that keeps no times: the rows' own tell
            log.debug("no modification time for %s: %s", path, one_line(exc, 200))
    schema = pa.schema([("label", pa.string()), ("error_code", pa.string()),  # error_code: null in version-1 parts
                        ("scanned_at", TS)])
    try:
        videos = pads.dataset(paths, schema=schema, filesystem=store.fs, format="parquet").to_table()
    except Exception as exc:  # noqa: BLE001 - the record is ended all the same; its counts are only a help
        log.warning("could not count the rows of scan %s: %s", scan_id, one_line(exc, 200))
        return {"parts": len(paths)}, max(times, default=None)
    times.append(pc.max(videos.column("scanned_at")).as_py())
    labels, errors = tally(videos)
    deleted = labels.pop(DELETED, 0)
    scanned = videos.num_rows - deleted
    rate = round(labels.get("ERROR", 0) / scanned, 4) if scanned else 0.0
    return ({"parts": len(paths), "scanned": scanned, "deleted": deleted, "labels": labels, "errors": errors,
             "lost": errors.get(WORKER_LOST, 0), "error_rate": rate}, max((t for t in times if t is not None), default=None))


def close_unfinished(store: Any, scan_id: str, by: str, heartbeat_at: datetime | None = None) -> RunRecord | None:
    """End the record of scan ``scan_id`` if it still says ``running``: scan ``by`` holds DEST's lease, so that scan
    is not running and will never end it. ``killed``, ended at its last sign of life when ``by`` took over its
    lapsed lease (SIGKILL, out of memory, a lost node): the latest of ``heartbeat_at`` (the lease's), its committed
    parts' times and rows' ``scanned_at`` (``committed``; a lease is renewed only every quarter of its term); without
    a heartbeat (its final record was refused, e.g. a full disk, or its lease lapsed unseen) its end is unknown:
    null. Its counts are what it committed; what it listed, skipped and deferred, its ``running`` record's.
    Only if the record is still what was read: a scan that was slow, not killed, may end its own record meanwhile,
    and its word stands. Returns the record written, if any."""
    path = f"{store.root}/{RUNS_DIR}/{scan_id}.json"
    counts, last = committed(store, scan_id)
    with locked(store.fs, store.root):
        data, etag = read_tagged(store.fs, path)
        if data is None:
            return None
        record = RunRecord.model_validate_json(data)
        if record.status != "running":
            return None
        how = (f"(killed: SIGKILL, out of memory, a lost node); its lease lapsed and scan {by} took the output over"
               if heartbeat_at is not None else
               f"(killed, or its output refused its final record: a full disk); scan {by}, holding the output's "
               "lease, found it still running")
        ended = (max(t for t in (heartbeat_at, record.started_at, last) if t is not None)
                 if heartbeat_at is not None else None)
        record = record.model_copy(update={
            "status": "killed", "exit_code": None, "error_code": "killed", "ended_at": ended,
            "elapsed_s": round((ended - record.started_at).total_seconds(), 3) if ended else None,
            "message": f"the scan stopped without ending its run {how}. Committed parts are kept.", **counts})
        try:
            write_if(store.fs, path, record_bytes(record), True, etag)
        except Contended:
            log.info("scan %s ended its own run record meanwhile: not closed as killed", scan_id)
            return None
    return record


def since_last_sweep(fs: Any, paths: list[str], also: str | None = None, batch: int = 16) -> list[RunRecord]:
    """The records ``close_all_unfinished`` must look at, newest first: back to the newest one that ended ``swept``,
    before which nothing can be left running (a ``busy`` record ended without holding the lease: it swept nothing).
    Not every record: an output of years of nightly runs would be thousands of GETs at every start (seconds on S3,
    inside the lease); the first scan after an upgrade reads them all, once. ``also``: the id of the scan whose lapsed
    lease this one took, read wherever it is."""
    found: list[RunRecord] = []
    newest_first = sorted(paths, key=record_id, reverse=True)  # ids sort by time (jobs/scan/ids.py)
    for start in range(0, len(newest_first), batch):
        chunk = read_record_files(fs, newest_first[start:start + batch])
        found += chunk
        if any(r.swept and r.status != "running" for r in chunk):
            break
    if also and all(r.scan_id != also for r in found):
        found += read_record_files(fs, [p for p in paths if record_id(p) == also])
    return found


def close_all_unfinished(store: Any, records: list[RunRecord], by: str, lapsed: tuple[str, datetime] | None) -> bool:
    """End every record of ``records`` still ``running`` but ``by``'s own (``close_unfinished``): scan ``by`` holds the
    lease, so their scans are not running. ``lapsed``: (scan id, last heartbeat) of the lease ``by`` took over, if
    it did. A failure only warns: those records are those scans', and ``by`` goes on. Returns whether every one
    was ended (``RunRecord.swept``)."""
    ended_all = True
    for record in records:
        if record.status != "running" or record.scan_id == by:
            continue
        heartbeat = lapsed[1] if lapsed and lapsed[0] == record.scan_id else None
        try:
            if close_unfinished(store, record.scan_id, by, heartbeat):
                log.warning("scan %s never ended its run record (%s): it now says killed", record.scan_id,
                            "its lease lapsed" if heartbeat else "found still running")
        except Exception as exc:  # noqa: BLE001
            ended_all = False
            log.warning("could not end the run record of scan %s: %s", record.scan_id, one_line(exc))
    return ended_all


def runs_table(records: list[RunRecord]):
    """The ``runs`` view of ``query``: one row per record, maps as JSON text (``json_extract`` reads them)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    schema = pa.schema([
        ("scan_id", pa.string()), ("status", pa.string()), ("exit_code", pa.int32()), ("error_code", pa.string()),
        ("message", pa.string()),
        ("source", pa.string()), ("output", pa.string()), ("host", pa.string()), ("pid", pa.int64()), ("started_at", ts),
        ("ended_at", ts), ("elapsed_s", pa.float64()), ("model_version", pa.string()),
        ("settings_digest", pa.string()), ("scoring_key", pa.string()), ("listed", pa.int64()), ("unlisted", pa.int64()),
        ("skipped", pa.int64()),
        ("deferred", pa.int64()), ("rescored", pa.int64()), ("deleted", pa.int64()),
        ("deletions_held", pa.int64()), ("scanned", pa.int64()), ("lost", pa.int64()), ("parts", pa.int64()), ("fakes", pa.int64()),
        ("reals", pa.int64()), ("no_face", pa.int64()), ("failed", pa.int64()), ("error_rate", pa.float64()),
        ("errors", pa.string()), ("quarantined", pa.list_(pa.string())), ("swept", pa.bool_()), ("plan", pa.string()), ("options", pa.string()),
    ])
    rows = []
    for r in records:
        row = r.model_dump(include={"scan_id", "status", "exit_code", "error_code", "message", "source", "output", "host", "pid",
                                    "started_at", "ended_at", "elapsed_s", "model_version", "settings_digest",
                                    "scoring_key", "listed", "unlisted", "skipped", "deferred", "rescored", "deleted", "deletions_held", "scanned", "lost", "parts", "error_rate",
                                    "quarantined", "swept"})
        row.update(fakes=r.labels.get("FAKE", 0), reals=r.labels.get("REAL", 0), no_face=r.labels.get("NO_FACE", 0),
                   failed=r.labels.get("ERROR", 0), errors=json.dumps(r.errors), plan=json.dumps(r.plan),
                   options=json.dumps(r.options, default=str))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


__all__ = ["RunRecord", "RUNS_DIR", "record_paths", "record_id", "read_record_files", "since_last_sweep", "settings_digest", "record_bytes", "write_record", "read_records", "tally",
           "committed", "close_unfinished", "close_all_unfinished", "runs_table"]
