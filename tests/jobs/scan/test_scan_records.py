"""Run records (jobs/scan/records.py) as the `runs` view of `query`: every field of a record is a column, unreadable
records are skipped, and docs/scan.md's alert query runs on them."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from jobs.scan.output import OutputStore
from jobs.scan.records import RunRecord, runs_table


def test_every_field_of_a_record_is_a_column_of_the_runs_view():
    record = RunRecord(scan_id="s1", source="s3://b/in/", output="/out", started_at=datetime.now(timezone.utc),
                       model_version="m", settings_digest="d", labels={"FAKE": 2, "REAL": 1, "ERROR": 1})
    table = runs_table([record])
    mapped = {"labels": {"fakes", "reals", "no_face", "failed"}, "record_version": set()}  # counts by label; internal
    for name in RunRecord.model_fields:
        assert mapped.get(name, {name}) <= set(table.column_names), name
    row = table.to_pylist()[0]
    assert (row["host"], row["pid"], row["fakes"], row["failed"]) == (record.host, record.pid, 2, 1)


def test_unreadable_run_records_are_skipped(tmp_path, caplog):
    from jobs.query.sql import run_query

    (tmp_path / "_runs").mkdir()
    (tmp_path / "_runs" / "broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert run_query(str(tmp_path), "SELECT count(*) FROM runs")[1] == [(0,)]
    assert "broken.json" in caplog.text


def test_the_documented_alert_query_runs_on_run_records(tmp_path):
    """docs/scan.md's staleness/error-rate alert is valid SQL over the `runs` view and reads it right."""
    import re
    from datetime import timedelta

    from jobs.query.sql import run_query
    from jobs.scan.records import RunRecord, record_bytes

    doc = (Path(__file__).resolve().parents[3] / "docs" / "scan.md").read_text()
    sql = re.search(r'--format json "\n(.*?)"\n```', doc, re.S).group(1)
    store = OutputStore(str(tmp_path))
    old = datetime.now(timezone.utc) - timedelta(days=3)
    for i, (status, at) in enumerate((("succeeded", old), ("too_many_errors", datetime.now(timezone.utc)))):
        record = RunRecord(scan_id=f"s{i}", status=status, exit_code=0 if i == 0 else 4, source="s", output="o",
                           started_at=at, ended_at=at, model_version="m", settings_digest="d", error_rate=0.1 * (i + 5),
                           quarantined=["x"] if i else [], unlisted=2 * i)
        store.put(f"_runs/{record.scan_id}.json", record_bytes(record))
    columns, rows = run_query(str(tmp_path), sql)
    assert dict(zip(columns, rows[0])) == {"stale": True, "last_status": "too_many_errors",
                                           "last_error_rate": pytest.approx(0.6), "last_unlisted": 2, "quarantines": 1}
    store.fs.rm(f"{store.root}/_runs/s0.json")  # no scan ever succeeded: stale, not NULL
    columns, rows = run_query(str(tmp_path), sql)
    assert dict(zip(columns, rows[0]))["stale"] is True


def test_records_of_an_output_whose_path_looks_like_a_glob_are_read(tmp_path):
    """fsspec reads a list of paths as globs: an output named "out[1]" read no record (query failed on it)."""
    from jobs.query.sql import run_query
    from jobs.scan.records import RunRecord, read_records, record_bytes

    root = tmp_path / "out[1]"
    store = OutputStore(str(root))
    at = datetime.now(timezone.utc)
    record = RunRecord(scan_id="s0", status="succeeded", exit_code=0, source="s", output="o", started_at=at,
                       ended_at=at, model_version="m", settings_digest="d")
    store.put("_runs/s0.json", record_bytes(record))
    assert [r.scan_id for r in read_records(store.fs, store.root)] == ["s0"]
    assert run_query(str(root), "SELECT scan_id FROM runs")[1] == [("s0",)]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_slow_scan_that_ends_its_record_meanwhile_is_not_closed_as_killed(where, tmp_path, s3_server, s3_bucket):
    """The next scan (B) read the record of a scan whose lease lapsed (A) as `running`; A was slow, not killed, and
    ends its own record `succeeded` right then. B's `killed` must not land over it: locally A's write waits for the
    lock B holds from its read to its write (and lands after), on S3 B's write is conditional on what it read."""
    import threading
    from datetime import timedelta

    from jobs.scan.records import close_unfinished, read_records, write_record

    store = (OutputStore(str(tmp_path / "out")) if where == "local"
             else OutputStore(f"s3://{s3_bucket}/out", s3_server["storage_options"]))
    store.prepare()
    started = datetime.now(timezone.utc) - timedelta(minutes=30)
    running = RunRecord(scan_id="A", source="s", output="o", started_at=started, model_version="m", settings_digest="d")
    write_record(store, running)
    ended = running.model_copy(update={"status": "succeeded", "exit_code": 0, "ended_at": datetime.now(timezone.utc),
                                       "scanned": 500})
    a_ends = threading.Thread(target=write_record, args=(store, ended))
    real_cat = store.fs.cat_file

    def read_then_a_ends(path, *args, **kwargs):
        data = real_cat(path, *args, **kwargs)
        if path.endswith("_runs/A.json") and a_ends.ident is None:
            a_ends.start()
            a_ends.join(timeout=1)  # without B's lock (or condition) A's record lands now, before B writes
        return data

    store.fs.cat_file = read_then_a_ends
    try:
        close_unfinished(store, "A", "B", started + timedelta(minutes=5))
    finally:
        store.fs.cat_file = real_cat
    a_ends.join(timeout=30)
    assert a_ends.ident is not None and not a_ends.is_alive()
    (record,) = [r for r in read_records(store.fs, store.root) if r.scan_id == "A"]
    assert (record.status, record.exit_code, record.scanned) == ("succeeded", 0, 500)


def test_a_scan_reads_the_records_back_to_the_last_sweep_not_every_one(tmp_path):
    """Every start read every record (3,000 on S3: 1.6 s → 17 s, inside the lease): records before the newest ended one
    whose scan swept cannot be left running, so they are not read. A `busy` record ended without sweeping (the diff
    review: 16 of them hid a killed scan's record for ever); the lease's lapsed scan is read wherever it is."""
    import fsspec

    from jobs.scan.records import record_paths, since_last_sweep, write_record

    store = OutputStore(str(tmp_path), {})
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def put(i, status, swept=False):
        write_record(store, RunRecord(scan_id=f"20260101T{i:06d}Z-x", status=status, swept=swept, source="s",
                                      output="o", started_at=start, model_version="m", settings_digest="d"))

    for i in range(40):
        put(i, "succeeded")  # written before the upgrade: any of them could be left running
    fs = fsspec.filesystem("file")
    assert len(since_last_sweep(fs, record_paths(fs, str(tmp_path)))) == 40
    put(40, "succeeded", swept=True)
    put(41, "running")  # a scan killed since
    for i in range(42, 62):
        put(i, "busy")  # scans refused meanwhile: they held no lease and swept nothing
    found = since_last_sweep(fs, record_paths(fs, str(tmp_path)), batch=4)
    assert "20260101T000041Z-x" in [r.scan_id for r in found] and len(found) == 24  # 6 batches of 4, not 62
    found = since_last_sweep(fs, record_paths(fs, str(tmp_path)), also="20260101T000003Z-x", batch=4)
    assert found[-1].scan_id == "20260101T000003Z-x"  # the scan whose lapsed lease was taken: always looked at


def test_a_killed_scans_counts_leave_its_tombstones_out_of_scanned_and_its_error_rate(tmp_path):
    """What a killed scan committed, as its record is ended with: a tombstone (DELETED) is no object scanned, so it is
    counted in `deleted` alone, and the error rate is over the objects scanned."""
    from jobs.scan.records import committed

    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    at = datetime.now(timezone.utc)
    store.commit("part-killed-00000", "2026-01-02", [
        {"schema_version": 6, "scan_id": "killed", "uri": f"/m/{i}.jpg", "fingerprint": "f", "label": label,
         "error_code": "worker_lost" if label == "ERROR" else None, "model_version": "m", "scanned_at": at}
        for i, label in enumerate(("REAL", "ERROR", "DELETED", "DELETED"))], [])
    counts, _last = committed(store, "killed")
    assert (counts["scanned"], counts["deleted"], counts["labels"], counts["error_rate"]) == (
        2, 2, {"REAL": 1, "ERROR": 1}, 0.5)
