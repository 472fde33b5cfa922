"""Nightly operations of ``scan`` without Ray: run records, the output lease, quarantine of unreadable
parts, one-line errors of ``query``/``report``, SIGTERM handling (in-process and in a real subprocess).
Slightly over the usual size: each operation's cases share the lease and output fixtures here."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.scan.lease import LeaseHeld, LeaseLost, OutputLease, _Contended
from jobs.scan.output import OutputStore

from scan_fixtures import latest_rows


ROW = {"schema_version": 1, "scan_id": "old", "uri": "/media/a.mp4", "fingerprint": "size:1:mtime:0",
       "label": "ERROR", "error": "x", "model_version": "m"}


def _app():
    from jobs.cli import app

    return app


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "_runs").glob("*.json"))]


def _store_with_parts(out: Path) -> OutputStore:
    """An output holding one good committed part, a non-Parquet `part-*.parquet` in videos and in faces."""
    store = OutputStore(str(out))
    store.prepare()
    store.commit("part-old-00000", "2026-01-02", [{**ROW, "scanned_at": datetime.now(timezone.utc)}], [])
    for table in ("videos", "faces"):
        bad = out / table / "scan_date=2026-01-03" / "part-garbage-00000.parquet"
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_bytes(b"this is not parquet\n" * 10)
    return store


# ------------------------------------------------------------------------------------------ lease
def _lease_cases(tmp_path, s3_server, s3_bucket) -> list[tuple]:
    import fsspec

    local = fsspec.filesystem("file")
    s3 = fsspec.filesystem("s3", **s3_server["storage_options"])
    return [(local, str(tmp_path / "out")), (s3, f"{s3_bucket}/out")]


def test_lease_excludes_a_second_scan_and_lapses_when_not_renewed(tmp_path, s3_server, s3_bucket):
    for fs, root in _lease_cases(tmp_path, s3_server, s3_bucket):
        first = OutputLease(fs, root, root, "scan-A", ttl_s=1.0)
        first.acquire()
        second = OutputLease(fs, root, root, "scan-B", ttl_s=1.0)
        with pytest.raises(LeaseHeld, match="in use by scan scan-A"):
            second.acquire()
        time.sleep(1.1)  # scan-A was killed: nobody renews its lease
        second.acquire()
        first.renew()
        assert first.lost and "scan-B" in first.lost
        with pytest.raises(LeaseLost):
            first.check()
        first.release()  # must not delete scan-B's lease
        assert json.loads(fs.cat_file(f"{root}/_lease.json"))["scan_id"] == "scan-B"
        second.release()
        assert not fs.exists(f"{root}/_lease.json")


def test_s3_lease_writes_are_conditional(s3_server, s3_bucket):
    """Two scans that both read "no lease" cannot both win: the second create and a stale replace fail."""
    import fsspec

    fs = fsspec.filesystem("s3", **s3_server["storage_options"])
    root = f"{s3_bucket}/out"
    winner, loser = OutputLease(fs, root, root, "A"), OutputLease(fs, root, root, "B")
    winner.acquire()
    at = datetime.now(timezone.utc)
    with pytest.raises(_Contended):
        loser._write(loser._info(at), exists=False, etag=None)
    with pytest.raises(_Contended):
        loser._write(loser._info(at), exists=True, etag='"0123456789abcdef0123456789abcdef"')
    assert json.loads(fs.cat_file(f"{root}/_lease.json"))["scan_id"] == "A"


def test_heartbeat_keeps_the_lease_past_its_ttl(tmp_path):
    import fsspec

    fs, root = fsspec.filesystem("file"), str(tmp_path / "out")
    lease = OutputLease(fs, root, root, "A", ttl_s=0.6)
    lease.acquire()
    first_expiry = json.loads(fs.cat_file(f"{root}/_lease.json"))["expires_at"]
    with lease.kept_alive():
        time.sleep(1.5)
        with pytest.raises(LeaseHeld):
            OutputLease(fs, root, root, "B", ttl_s=0.6).acquire()
    assert json.loads(fs.cat_file(f"{root}/_lease.json"))["expires_at"] > first_expiry
    lease.release()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_scan_on_a_busy_output_exits_3_with_one_line(where, detector_env, tmp_path, samples_dir, s3_server, s3_bucket):
    import fsspec

    if where == "local":
        fs, root, output = fsspec.filesystem("file"), str(tmp_path / "out"), str(tmp_path / "out")
    else:
        fs, root = fsspec.filesystem("s3", **s3_server["storage_options"]), f"{s3_bucket}/out"
        output = f"s3://{root}"
    holder = OutputLease(fs, root, output, "the-nightly-run", ttl_s=60)
    holder.acquire()
    result = CliRunner().invoke(_app(), ["scan", str(samples_dir), "-o", output, "--no-progress"])
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "output busy" in lines[0] and "the-nightly-run" in lines[0], result.output
    assert not fs.exists(f"{root}/_deepfakestream.json")  # nothing of DEST was touched
    records = [json.loads(fs.cat_file(p)) for p in fs.find(f"{root}/_runs")]
    assert [(r["status"], r["exit_code"]) for r in records] == [("busy", 3)]
    holder.release()


# ----------------------------------------------------------------------------------- run records
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


def test_unreadable_run_records_are_skipped(tmp_path, caplog):
    from jobs.query.sql import run_query

    (tmp_path / "_runs").mkdir()
    (tmp_path / "_runs" / "broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert run_query(str(tmp_path), "SELECT count(*) FROM runs")[1] == [(0,)]
    assert "broken.json" in caplog.text


# ------------------------------------------------------------------------------------- quarantine
def test_query_and_report_skip_unreadable_parts_with_a_warning(tmp_path, caplog):
    from jobs.query.sql import run_query
    from jobs.report.text import report

    _store_with_parts(tmp_path / "out")
    with caplog.at_level(logging.WARNING):
        assert run_query(str(tmp_path / "out"), "SELECT uri, label FROM videos")[1] == [("/media/a.mp4", "ERROR")]
        assert report(str(tmp_path / "out"))["errors"] == 1
    assert "part-garbage-00000.parquet" in caplog.text and "quarantines it" in caplog.text
    assert (tmp_path / "out" / "videos" / "scan_date=2026-01-03" / "part-garbage-00000.parquet").exists()  # read-only


def test_scan_quarantines_unreadable_parts_and_names_them_in_its_record(detector_env, tmp_path, caplog):
    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    out = tmp_path / "out"
    _store_with_parts(out)
    (tmp_path / "media").mkdir()
    with caplog.at_level(logging.WARNING):
        summary = run_scan(load_settings(), ScanConfig(source=str(tmp_path / "media"), output=str(out), progress=False))
    moved = sorted(summary.quarantined)
    assert [Path(p).relative_to(out).parts[0] for p in moved] == ["faces", "videos"]
    assert "quarantined unreadable part" in caplog.text
    (record,) = _records(out)
    assert sorted(record["quarantined"]) == moved and record["status"] == "succeeded"
    kept = sorted(p.relative_to(out).as_posix() for p in (out / "_quarantine").rglob("*.parquet"))
    assert kept == [f"_quarantine/{summary.scan_id}/{t}/scan_date=2026-01-03/part-garbage-00000.parquet"
                    for t in ("faces", "videos")]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_query(str(out), "SELECT count(*) FROM videos_history")[1] == [(1,)]
    assert "unreadable" not in caplog.text


def test_scan_quarantines_unreadable_parts_on_s3(detector_env, tmp_path, s3_server, s3_bucket, caplog):
    caplog.set_level(logging.WARNING)
    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    output = f"s3://{s3_bucket}/out"
    store = OutputStore(output, s3_server["storage_options"])
    store.prepare()
    store.commit("part-old-00000", "2026-01-02", [{**ROW, "scanned_at": datetime.now(timezone.utc)}], [])
    bad = f"{store.root}/videos/scan_date=2026-01-03/part-garbage-00000.parquet"
    store.fs.pipe_file(bad, b"PAR1 but not really")
    (tmp_path / "media").mkdir()
    summary = run_scan(load_settings(), ScanConfig(source=str(tmp_path / "media"), output=output, progress=False))
    assert summary.quarantined == [f"s3://{bad}"]
    store.fs.invalidate_cache()
    assert not store.fs.exists(bad)
    assert store.fs.exists(f"{store.root}/_quarantine/{summary.scan_id}/videos/scan_date=2026-01-03/part-garbage-00000.parquet")
    record = json.loads(store.fs.cat_file(f"{store.root}/_runs/{summary.scan_id}.json"))
    assert record["quarantined"] == [f"s3://{bad}"] and record["status"] == "succeeded"
    assert "quarantined unreadable part" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_query(output, "SELECT count(*) FROM videos")[1] == [(1,)]
    assert "unreadable" not in caplog.text


def test_a_part_with_a_good_footer_but_bad_data_is_quarantined_by_the_scan(tmp_path):
    store = _store_with_parts(tmp_path / "out")
    store.quarantine_unreadable("s1")
    good = next(iter(store.list_parts("videos").values()))
    data = bytearray(Path(good).read_bytes())
    data[4:200] = b"\xff" * 196  # the first data pages: the footer still parses
    broken = Path(good).with_name("part-broken-00000.parquet")
    broken.write_bytes(bytes(data))
    assert latest_rows(store, "s2") == {("/media/a.mp4", "size:1:mtime:0", "m"): "ERROR"}
    assert store.quarantined[-1] == str(broken) and not broken.exists()


def test_query_and_report_on_s3_without_credentials_fail_in_one_line(s3_server, s3_bucket, monkeypatch):
    import s3fs

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance metadata endpoint
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    s3fs.S3FileSystem.clear_instance_cache()
    runner = CliRunner()
    for args in (["query", "-o", f"s3://{s3_bucket}/out", "SELECT count(*) FROM videos"],
                 ["report", f"s3://{s3_bucket}/out"]):
        result = runner.invoke(_app(), args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert "Traceback" not in result.output and "credentials" in lines[0].lower(), lines
    s3fs.S3FileSystem.clear_instance_cache()


# ------------------------------------------------------------------------------------------ SIGTERM
def test_sigterm_is_held_during_a_commit_and_raised_after_it():
    from jobs.scan.stop import GracefulStop, Terminated

    stop = GracefulStop(grace_s=30)
    stop.install()
    try:
        done = []
        with pytest.raises(Terminated):
            with stop.critical():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)  # the handler has run by now; the commit goes on
                done.append("committed")
        assert done == ["committed"] and stop.requested
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


@pytest.mark.slow
def test_sigterm_commits_finished_rows_and_the_run_record(detector_env, tmp_path, samples_dir):
    """A real `deepfakestream scan` process (its own Ray) gets SIGTERM after its first commit: it commits
    what is finished, writes a `terminated` run record, releases the lease and exits 143 promptly."""
    import shutil

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    for i in range(12):
        shutil.copy(samples_dir / ("astronaut.jpg" if i % 2 else "coffee.jpg"), source / f"img{i:02d}.jpg")
    env = {**os.environ, "DFS_DECODE__NUM_FRAMES": "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "scan", str(source), "-o", str(out), "--no-progress",
                             "--num-cpus", "2", "--commit-every", "1", "--classify-batch", "1", "--stop-timeout", "30"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((out / "videos").rglob("part-*.parquet")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no commit within 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert took < 35, f"exited {took:.1f} s after SIGTERM"
    assert "stopped (SIGTERM)" in stderr and "Traceback" not in stderr
    (record,) = _records(out)
    assert (record["status"], record["exit_code"]) == ("terminated", 143)
    rows = latest_rows(OutputStore(str(out)))
    assert 1 <= record["scanned"] == len(rows) < 12 and record["parts"] == len(list((out / "videos").rglob("*.parquet")))
    assert not (out / "_lease.json").exists()


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
                           quarantined=["x"] if i else [])
        store.put(f"_runs/{record.scan_id}.json", record_bytes(record))
    columns, rows = run_query(str(tmp_path), sql)
    assert dict(zip(columns, rows[0])) == {"stale": True, "last_status": "too_many_errors",
                                           "last_error_rate": pytest.approx(0.6), "quarantines": 1}
    store.fs.rm(f"{store.root}/_runs/s0.json")  # no scan ever succeeded: stale, not NULL
    columns, rows = run_query(str(tmp_path), sql)
    assert dict(zip(columns, rows[0]))["stale"] is True


def test_a_folder_of_symlinks_lists_the_files_they_point_to(tmp_path, samples_dir):
    """fsspec lists local links as type "other"; a folder of links to media must still be scanned."""
    from jobs.scan.listing import list_objects

    (tmp_path / "media").mkdir()
    target = samples_dir / "astronaut.jpg"
    (tmp_path / "media" / "a.jpg").symlink_to(target)
    (tmp_path / "media" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")  # dangling: skipped
    (tmp_path / "media" / "dir.jpg").symlink_to(samples_dir)  # a link to a folder: skipped
    entries = list_objects(str(tmp_path / "media"), {})
    assert [Path(e["uri"]).name for e in entries] == ["a.jpg"]
    assert entries[0]["size"] == target.stat().st_size and entries[0]["mtime"] == pytest.approx(target.stat().st_mtime)
    assert list_objects(str(tmp_path / "media" / "a.jpg"), {})[0]["size"] == target.stat().st_size  # one linked file
