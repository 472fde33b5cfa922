"""The scan's nightly operation end to end, without Ray: a run with nothing new still writes its run record
(``running`` while it works, then ``succeeded``; ``not_started`` for a missing source), which query and report read."""

from __future__ import annotations

import json

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
