"""Unreadable parts (jobs/scan/quarantine.py, OutputStore): query/report skip them with a warning; a scan (local, S3)
moves them aside and names them in its run record, a bad part with its faces twin, never a good part whose read
failed because the storage did. Storage failures are injected into a real local filesystem's ``open``/``cat_file``
(an S3 timeout cannot be made to happen on cue here)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from jobs.scan.output import OutputError, OutputStore
from jobs.scan.quarantine import part_problem

from scan_fixtures import ERROR_ROW, _records, _store_with_parts, latest_rows


ROW = {"schema_version": 1, "scan_id": "s0", "uri": "/media/a.mp4", "fingerprint": "size:1:mtime:0",
       "label": "FAKE", "model_version": "m"}
FACE = {"schema_version": 1, "scan_id": "s0", "uri": "/media/a.mp4", "face": 0, "frame": 0, "frame_number": 0,
        "model_version": "m"}


def _store(out: Path) -> OutputStore:
    """An output with one committed part (a videos row and its face)."""
    store = OutputStore(str(out))
    store.prepare()
    now = datetime.now(timezone.utc)
    store.commit("part-s0-00000", "2026-01-02", [{**ROW, "scanned_at": now}], [{**FACE, "scanned_at": now}])
    return store


def _flaky(monkeypatch, fs, always: bool) -> list[str]:
    """``open`` fails as a network read would: once per path (a passing timeout), or ``always`` (the local
    filesystem's ``cat_file`` opens through it, so that fails too)."""
    calls = []
    real_open = fs.open

    def flaky_open(path, *args, **kwargs):
        calls.append(path)
        if always or calls.count(path) == 1:
            raise TimeoutError("read timed out")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(fs, "open", flaky_open)
    return calls


def test_a_failed_footer_read_of_a_good_part_moves_nothing(tmp_path, monkeypatch):
    store = _store(tmp_path / "out")
    part = next(iter(store.list_parts("videos").values()))
    calls = _flaky(monkeypatch, store.fs, always=False)
    assert part_problem(store.fs, part, "videos") is None          # the bytes, read whole, are a good part
    assert calls                                                    # and the failing path was taken
    assert store.quarantine_unreadable("s1") == []


def test_a_storage_that_fails_every_read_stops_the_scan_and_moves_nothing(tmp_path, monkeypatch):
    store = _store(tmp_path / "out")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*.parquet"))
    _flaky(monkeypatch, store.fs, always=True)
    with pytest.raises(OutputError, match="timed out"):
        store.quarantine_unreadable("s1")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*.parquet")) == before


def test_a_failed_data_read_of_good_parts_moves_nothing(tmp_path, monkeypatch):
    store = _store(tmp_path / "out")
    import pyarrow.dataset as pads

    def broken(*args, **kwargs):  # the dataset read of every part at once fails (a storage hiccup)
        raise OSError("connection reset")

    monkeypatch.setattr(pads, "dataset", broken)
    assert latest_rows(store, "s1") == {("/media/a.mp4", "size:1:mtime:0", "m"): "FAKE"}
    assert store.quarantined == [] and len(store.list_parts("faces")) == 1


def test_a_videos_part_with_bad_data_takes_its_faces_twin_and_no_face_rows_are_lost_to_cleanup(tmp_path):
    """Found by the read of what was scanned (``latest``), as one that went bad after the scan's check would be."""
    store = _store(tmp_path / "out")
    good = Path(next(iter(store.list_parts("videos").values())))
    twin = Path(next(iter(store.list_parts("faces").values())))
    broken_name = "part-broken-00000.parquet"
    data = bytearray(good.read_bytes())
    data[4:200] = b"\xff" * 196  # the first data pages: the footer still parses, the data does not
    good.with_name(broken_name).write_bytes(bytes(data))
    twin.with_name(broken_name).write_bytes(twin.read_bytes())
    assert latest_rows(store, "s2") == {("/media/a.mp4", "size:1:mtime:0", "m"): "FAKE"}
    aside = tmp_path / "out" / "_quarantine" / "s2"
    assert sorted(p.relative_to(aside).as_posix() for p in aside.rglob("*.parquet")) == [
        f"faces/scan_date=2026-01-02/{broken_name}", f"videos/scan_date=2026-01-02/{broken_name}"]
    store.cleanup()                                                 # the next scan's start: the good twin stays
    assert list(store.list_parts("faces")) == ["part-s0-00000.parquet"]


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
    store.commit("part-old-00000", "2026-01-02", [{**ERROR_ROW, "scanned_at": datetime.now(timezone.utc)}], [])
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


def test_a_videos_part_without_a_fingerprint_is_a_problem(tmp_path):
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "p.parquet")
    pq.write_table(pa.table({"scan_id": ["s"], "uri": ["a"]}), path)
    assert "fingerprint" in part_problem(fsspec.filesystem("file"), path, "videos")


def test_a_part_whose_score_data_alone_is_corrupt_is_quarantined_by_the_scan(tmp_path):
    """A part whose footer reads and whose columns incremental scans read are fine, but whose `score` pages are noise:
    footers and the skip rule's read pass it, so it stayed and every query and report of scores had to leave it out,
    run after run. The scan's check reads every column: a videos part goes (with its faces twin), a faces part too."""
    from helpers import corrupt_column

    store = _store(tmp_path / "out")  # part-s0-00000: stays
    now = datetime.now(timezone.utc)
    for scan in ("s1", "s2"):
        row = {**ROW, "scan_id": scan, "uri": f"/media/{scan}.mp4", "score": 0.9, "scanned_at": now}
        store.commit(f"part-{scan}-00000", "2026-01-02", [row], [{**FACE, **row, "face": 0, "frame": 0}])
    corrupt_column(store.list_parts("videos")["part-s1-00000.parquet"], "score")
    corrupt_column(store.list_parts("faces")["part-s2-00000.parquet"], "score")
    moved = store.quarantine_unreadable("s3")
    aside = tmp_path / "out" / "_quarantine" / "s3"
    assert sorted(Path(p).relative_to(tmp_path / "out").as_posix() for p in moved) == sorted(
        p.relative_to(aside).as_posix() for p in aside.rglob("*.parquet")) == [
        "faces/scan_date=2026-01-02/part-s1-00000.parquet", "faces/scan_date=2026-01-02/part-s2-00000.parquet",
        "videos/scan_date=2026-01-02/part-s1-00000.parquet"]
    assert sorted(store.list_parts("videos")) == ["part-s0-00000.parquet", "part-s2-00000.parquet"]
    assert latest_rows(store, "s3") == {("/media/a.mp4", "size:1:mtime:0", "m"): "FAKE",
                                        ("/media/s2.mp4", "size:1:mtime:0", "m"): "FAKE"}
