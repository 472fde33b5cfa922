"""The scan's nightly operation end to end, without Ray: a run with nothing new still writes its run record
(``running`` while it works, then ``succeeded``; ``not_started`` for a missing source), which query and report read;
and the record of a killed scan is ended (``killed``) by the scan that takes over its lapsed lease."""

from __future__ import annotations

import json
import time

import pytest

from scan_fixtures import _records


def test_a_scan_with_nothing_new_still_writes_its_run_record(detector_env, tmp_path, monkeypatch):
    import jobs.scan.driver
    import jobs.scan.errors
    from jobs.query.sql import run_query
    from jobs.report.text import report
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    (source / "notes.txt").write_text("not media\n")
    seen_while_running = []
    real_list = jobs.scan.driver.list_objects

    def list_and_look(*args, **kwargs):  # the record must say "running" while the scan works
        seen_while_running.extend(r["status"] for r in _records(out))
        assert json.loads((out / "_lease.json").read_text())["scan_id"]
        return real_list(*args, **kwargs)

    monkeypatch.setattr(jobs.scan.driver, "list_objects", list_and_look)
    summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    assert seen_while_running == ["running"]
    (record,) = _records(out)
    assert (record["status"], record["exit_code"], record["scan_id"]) == ("succeeded", 0, summary.scan_id)
    assert (record["listed"], record["scanned"], record["source"]) == (0, 0, str(source))
    assert record["settings_digest"] and record["model_version"] == summary.model_version
    assert record["ended_at"] >= record["started_at"]
    assert not (out / "_lease.json").exists()

    with pytest.raises(jobs.scan.errors.ScanError):  # a source that is gone: exit 2, and a record saying why
        run_scan(load_settings(), ScanConfig(source=str(tmp_path / "gone"), output=str(out), progress=False))
    statuses = sorted((r["status"], r["exit_code"]) for r in _records(out))
    assert statuses == [("not_started", 2), ("succeeded", 0)]
    _columns, rows = run_query(str(out), "SELECT status, exit_code, listed FROM runs ORDER BY status")
    assert rows == [("not_started", 2, 0), ("succeeded", 0, 0)]
    data = report(str(out))
    assert [r["status"] for r in data["runs"]][-1] in ("succeeded", "not_started") and len(data["runs"]) == 2
    assert data["last_success"] is not None


def test_the_scan_that_takes_a_lapsed_lease_ends_the_killed_scans_record(detector_env, tmp_path):
    """A SIGKILLed scan leaves its record `running` and its lease to lapse: the next scan takes the lease over
    and ends that record as `killed` at its last heartbeat, so "a running record older than the deadline"
    fires once, not forever. A record that had ended is left alone."""
    from datetime import datetime, timedelta, timezone

    import fsspec

    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.lease import OutputLease
    from jobs.scan.output import OutputStore
    from jobs.scan.records import RunRecord, record_bytes
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    store = OutputStore(str(out))
    store.prepare()
    started = datetime.now(timezone.utc) - timedelta(hours=3)
    for scan_id, status in (("killed-one", "running"), ("ended-one", "succeeded")):
        store.put(f"_runs/{scan_id}.json", record_bytes(RunRecord(scan_id=scan_id, status=status, source=str(source),
                                                                  output=str(out), started_at=started, model_version="m",
                                                                  settings_digest="d")))
    store.commit("part-killed-one-00000", "2026-01-02", [{"schema_version": 4, "scan_id": "killed-one", "uri": "/m/a.jpg",
                                                         "fingerprint": "f", "label": "REAL", "model_version": "m",
                                                         "scanned_at": started}], [])
    for scan_id in ("ended-one", "killed-one"):  # each holds the lease in turn and is killed: it lapses
        OutputLease(fsspec.filesystem("file"), str(out), str(out), scan_id, ttl_s=0.05).acquire()
        heartbeat = json.loads((out / "_lease.json").read_text())["heartbeat_at"]
        time.sleep(0.1)
        summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    records = {r["scan_id"]: r for r in _records(out)}
    killed = records["killed-one"]
    assert (killed["status"], killed["exit_code"], killed["error_code"], killed["ended_at"]) == ("killed", None, "killed", heartbeat)
    assert summary.scan_id in killed["message"] and killed["parts"] == 1 and killed["elapsed_s"] > 3 * 3600 - 60
    assert records["ended-one"]["status"] == "succeeded" and records["ended-one"]["ended_at"] is None
    _columns, rows = run_query(str(out), "SELECT status FROM runs WHERE scan_id = 'killed-one'")
    assert rows == [("killed",)]
