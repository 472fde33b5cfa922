"""Which parts a scan moves aside (jobs/scan/quarantine.py, OutputStore): a bad part with its faces twin, never a
good part whose read failed because the storage did. Storage failures are injected into a real local
filesystem's ``open``/``cat_file`` (an S3 timeout cannot be made to happen on cue here)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from jobs.scan.output import OutputError, OutputStore
from jobs.scan.quarantine import part_problem

from scan_fixtures import latest_rows


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
    store = _store(tmp_path / "out")
    good = Path(next(iter(store.list_parts("videos").values())))
    twin = Path(next(iter(store.list_parts("faces").values())))
    broken_name = "part-broken-00000.parquet"
    data = bytearray(good.read_bytes())
    data[4:200] = b"\xff" * 196  # the first data pages: the footer still parses, the data does not
    good.with_name(broken_name).write_bytes(bytes(data))
    twin.with_name(broken_name).write_bytes(twin.read_bytes())
    assert store.quarantine_unreadable("s1") == []                  # its footer is fine
    assert latest_rows(store, "s2") == {("/media/a.mp4", "size:1:mtime:0", "m"): "FAKE"}
    aside = tmp_path / "out" / "_quarantine" / "s2"
    assert sorted(p.relative_to(aside).as_posix() for p in aside.rglob("*.parquet")) == [
        f"faces/scan_date=2026-01-02/{broken_name}", f"videos/scan_date=2026-01-02/{broken_name}"]
    store.cleanup()                                                 # the next scan's start: the good twin stays
    assert list(store.list_parts("faces")) == ["part-s0-00000.parquet"]
