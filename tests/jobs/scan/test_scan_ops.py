"""The scan's nightly operation end to end, without Ray: a run with nothing new still writes its run record
(``running`` while it works, then ``succeeded``; ``not_started`` for a missing source), which query and report read;
and the record of a killed scan is ended (``killed``) by the scan that takes over its lapsed lease; a file name that
is not UTF-8 is counted (``unlisted``), not a crash."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timezone

import jobs.cli
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
    assert (record["status"], record["exit_code"], record["scan_id"], record["swept"]) == ("succeeded", 0, summary.scan_id, True)
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
    for scan_id, status in (("ended-one", "succeeded"), ("killed-one", "running")):  # each holds the lease in turn,
        # writes its record and is killed: its lease lapses
        OutputLease(fsspec.filesystem("file"), str(out), str(out), scan_id, ttl_s=0.05).acquire()
        store.put(f"_runs/{scan_id}.json", record_bytes(RunRecord(scan_id=scan_id, status=status, source=str(source),
                                                                  output=str(out), started_at=started, model_version="m",
                                                                  settings_digest="d")))
        store.commit(f"part-{scan_id}-00000", "2026-01-02", [{"schema_version": 4, "scan_id": scan_id, "uri": "/m/a.jpg",
                                                             "fingerprint": "f", "label": "REAL", "model_version": "m",
                                                             "scanned_at": started}], [])
        heartbeat = json.loads((out / "_lease.json").read_text())["heartbeat_at"]
        time.sleep(0.1)
        summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    records = {r["scan_id"]: r for r in _records(out)}
    killed = records["killed-one"]
    assert (killed["status"], killed["exit_code"], killed["error_code"], killed["ended_at"]) == ("killed", None, "killed", heartbeat)
    assert summary.scan_id in killed["message"] and killed["elapsed_s"] > 3 * 3600 - 60
    assert (killed["parts"], killed["scanned"], killed["labels"]) == (1, 1, {"REAL": 1})  # what it committed
    assert records["ended-one"]["status"] == "succeeded" and records["ended-one"]["ended_at"] is None
    _columns, rows = run_query(str(out), "SELECT status FROM runs WHERE scan_id = 'killed-one'")
    assert rows == [("killed",)]


def test_a_final_run_record_the_output_refuses_fails_the_scan_and_the_next_scan_ends_it(detector_env, tmp_path,
                                                                                        monkeypatch):
    """A full disk took the `running` record and refused the final one: that scan exited 0 (`succeeded`,
    record_written false) and its record said `running` forever, as the next scans (holding a lease that had been
    released, not lapsed) never looked. Now it exits 2 (`output_error`), and the next scan, holding the lease, ends
    every record still `running` as `killed` (end unknown: null), counting what that scan committed."""
    import jobs.scan.driver
    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.output import OutputStore
    from pipeline.config import load_settings
    from typer.testing import CliRunner

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    running: dict = {}
    real_list = jobs.scan.driver.list_objects

    def refuse_the_final_record(*args, **kwargs):  # while the scan works: its record's place takes no file now
        (path,) = [p for p in (out / "_runs").glob("*.json") if p.is_file() and p not in running]
        running[path] = path.read_bytes()
        path.unlink()
        (path / "not-a-file").mkdir(parents=True)
        return real_list(*args, **kwargs)

    monkeypatch.setattr(jobs.scan.driver, "list_objects", refuse_the_final_record)
    summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    assert (summary.status, summary.exit_code, summary.error_code, summary.record_written) == (
        "output_error", 2, "output_error", False)
    assert f"_runs/{summary.scan_id}.json" in summary.message and "committed" in summary.message
    cli = CliRunner().invoke(jobs.cli.app, ["scan", str(source), "-o", str(out), "--no-progress"])
    assert cli.exit_code == 2, cli.output  # the command exits with it, and does not point at a record it has not
    assert "could not be written" in cli.stderr and "run record: _runs/" not in cli.stderr
    monkeypatch.setattr(jobs.scan.driver, "list_objects", real_list)
    for path, data in running.items():  # what a full disk leaves: the `running` record, no final one
        shutil.rmtree(path)
        path.write_bytes(data)
    stuck = summary.scan_id
    rows = [{"schema_version": 5, "scan_id": stuck, "uri": f"/m/{name}", "fingerprint": "f", "label": label,
             "error_code": code, "model_version": "m", "scanned_at": datetime.now(timezone.utc)}
            for name, label, code in (("a.jpg", "REAL", None), ("b.mp4", "ERROR", "worker_lost"))]
    OutputStore(str(out)).commit(f"part-{stuck}-00000", "2026-01-02", rows, [])  # what it had committed

    after = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    records = {r["scan_id"]: r for r in _records(out)}
    ended = records[stuck]
    assert (ended["status"], ended["exit_code"], ended["error_code"], ended["ended_at"]) == ("killed", None, "killed", None)
    assert after.scan_id in ended["message"] and "refused its final record" in ended["message"]
    assert (ended["parts"], ended["scanned"], ended["lost"], ended["labels"], ended["errors"]) == (
        1, 2, 1, {"REAL": 1, "ERROR": 1}, {"worker_lost": 1})
    assert sorted(r["status"] for r in records.values()) == ["killed", "killed", "succeeded"]  # the CLI's run too
    assert records[after.scan_id]["status"] == "succeeded"
    _columns, still = run_query(str(out), "SELECT scan_id FROM runs WHERE status = 'running'")
    assert still == []  # docs/scan.md's alert on an old `running` record fires no more


def test_a_file_name_that_is_not_utf8_no_longer_crashes_the_scan_and_is_counted(detector_env, tmp_path):
    """`caf\\xe9.jpg` (a Latin-1 name) made every scan of its folder crash (scan_crashed: UnicodeEncodeError in the
    skip rule's Arrow array of URIs), so nothing there was scanned, every night. It is left out and counted
    (`unlisted`, in the summary, the run record and the `runs` view); here it is the only file, so no Ray starts."""
    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    with open(os.fsencode(source) + b"/caf\xe9.jpg", "wb") as handle:
        handle.write(b"\xff\xd8\xff not scanned")
    summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    assert (summary.status, summary.exit_code, summary.seen, summary.unlisted) == ("succeeded", 0, 0, 1)
    (record,) = _records(out)
    assert (record["status"], record["listed"], record["unlisted"]) == ("succeeded", 0, 1)
    assert run_query(str(out), "SELECT unlisted FROM runs")[1] == [(1,)]
    import jobs.cli
    from typer.testing import CliRunner

    cli = CliRunner().invoke(jobs.cli.app, ["scan", str(source), "-o", str(out), "--no-progress"])
    assert cli.exit_code == 0 and "1 not listed" in cli.stderr, cli.output  # the person reading it is told too


def test_the_lease_is_kept_alive_through_the_start_up_reads(detector_env, tmp_path, monkeypatch):
    """Listing and reading run records on a slow store took longer than the lease while nothing renewed it, and a
    second scan took the output over and ran beside the first: the reads now run inside ``kept_alive``."""
    import fsspec

    import jobs.scan.driver
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.lease import LeaseHeld, OutputLease
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    real_paths, tries = jobs.scan.driver.record_paths, []

    def slow_store(fs, root):
        time.sleep(2.5)  # 2.5 leases of 1 s
        try:
            OutputLease(fsspec.filesystem("file"), str(out), str(out), "the-other-scan", ttl_s=1).acquire()
            tries.append("taken")
        except LeaseHeld:
            tries.append("busy")
        return real_paths(fs, root)

    monkeypatch.setattr(jobs.scan.driver, "record_paths", slow_store)
    summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False, lease_seconds=1))
    assert tries == ["busy"] and summary.status == "succeeded"
