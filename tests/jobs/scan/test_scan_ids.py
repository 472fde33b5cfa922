"""Scan ids (jobs/scan/ids.py): a scan's id comes after every id already in its output, so a scan whose clock ran
ahead does not stay "latest" (the skip rule, the videos view) until real time catches up with it."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from jobs.scan.ids import after, id_time, new_scan_id, part_scan_id


def test_an_id_comes_after_the_latest_it_knows_and_keeps_its_suffix():
    now = datetime(2026, 12, 7, 17, 30, 0, tzinfo=timezone.utc)
    own = new_scan_id(now)
    assert after(own, ["20261206T020000Z-aaaaaa", "old", "killed-one"]) == (own, None)  # ids of other shapes: no time
    ahead = "20271207T173000Z-bbbbbb"
    bumped, last = after(own, [ahead, "20261206T020000Z-aaaaaa"])
    assert last == ahead and bumped == f"20271207T173001Z-{own[-6:]}" and bumped > ahead
    assert after(own, [own.replace(own[-6:], "ffffff")])[0] > own.replace(own[-6:], "ffffff")  # the same second
    assert id_time(bumped) == datetime(2027, 12, 7, 17, 30, 1, tzinfo=timezone.utc) and id_time("old") is None
    assert part_scan_id(f"part-{own}-00012.parquet") == own


def test_a_scan_after_one_whose_clock_ran_ahead_takes_a_later_id(detector_env, tmp_path, monkeypatch, caplog):
    """One scan with its clock a year ahead wrote its record (and its rows would be latest for a year); the next
    scans, on a right clock, take ids after it (and after parts whose records were archived), and say why; their
    records keep their true start."""
    import jobs.scan.driver
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.output import OutputStore
    from pipeline.config import load_settings

    from scan_fixtures import _records

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()

    def scan():
        return run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))

    class YearAhead(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(days=365)

    monkeypatch.setattr(jobs.scan.driver, "datetime", YearAhead)
    skewed = scan()
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="jobs.scan.driver"):
        first = scan()
    assert first.scan_id > skewed.scan_id and id_time(first.scan_id) == id_time(skewed.scan_id) + timedelta(seconds=1)
    assert f"scan {skewed.scan_id}" in caplog.text and "check NTP" in caplog.text
    second = scan()
    assert second.scan_id > first.scan_id
    archived = new_scan_id(datetime.now(timezone.utc) + timedelta(days=400))  # a part whose record is gone
    OutputStore(str(out)).commit(f"part-{archived}-00000", "2028-01-01", [], [])
    third = scan()
    assert third.scan_id > archived
    records = {r["scan_id"]: r for r in _records(out)}
    assert set(records) == {skewed.scan_id, first.scan_id, second.scan_id, third.scan_id}
    started = datetime.fromisoformat(records[third.scan_id]["started_at"].replace("Z", "+00:00"))
    assert abs(started - datetime.now(timezone.utc)) < timedelta(minutes=5)  # the id is ordered, the time is true
    assert not (out / "_lease.json").exists()
