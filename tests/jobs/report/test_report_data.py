"""jobs/report/data.py: the suspects' faces come from their own scan's rows, read from their partitions only."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from jobs.query.sql import connect
from jobs.report.data import load
from report_fixtures import face_row, video_row, write_scan

DAY1 = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)
DAY2, DAY3 = DAY1 + timedelta(days=1), DAY1 + timedelta(days=2)
SCAN1, SCAN2, SCAN3 = (f"{d:%Y%m%dT%H%M%SZ}-{i:06x}" for i, d in enumerate((DAY1, DAY2, DAY3)))


def test_each_suspect_gets_its_latest_scans_faces_from_its_partitions_only(tmp_path):
    """a.mp4 scanned on day 1 (3 faces) and again on day 2 (2 faces, a thumbnail each): the page shows day 2's. Day
    3's faces part holds no suspect and its data is corrupt (no statistics to skip it by either): never read, where
    reading each suspect through the ``faces`` view read every part."""
    import pyarrow.parquet as pq

    dest = tmp_path / "out"
    write_scan(dest, SCAN1, DAY1, [video_row(SCAN1, "/a.mp4", "FAKE", 0.9, DAY1, faces=3)],
               [face_row(SCAN1, "/a.mp4", i, 0.9, DAY1, thumb_jpeg=b"old") for i in range(3)])
    write_scan(dest, SCAN2, DAY2, [video_row(SCAN2, "/a.mp4", "FAKE", 0.7, DAY2, faces=2),
                                   video_row(SCAN2, "/b.mp4", "REAL", 0.2, DAY2)],
               [face_row(SCAN2, "/a.mp4", 0, 0.5, DAY2, thumb_jpeg=b"a0"),
                face_row(SCAN2, "/a.mp4", 1, 0.75, DAY2, thumb_jpeg=b"a1"),
                face_row(SCAN2, "/b.mp4", 0, 0.25, DAY2, thumb_jpeg=b"b0")])
    store = write_scan(dest, SCAN3, DAY3, [video_row(SCAN3, "/c.mp4", "REAL", 0.125, DAY3)],
                       [face_row(SCAN3, "/c.mp4", 0, 0.125, DAY3)])
    (other,) = [p for name, p in store.list_parts("faces").items() if SCAN3 in name]
    pq.write_table(pq.read_table(other, partitioning=None), other, write_statistics=False)
    data = bytearray(Path(other).read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[4:-footer] = b"\xff" * (len(data) - footer - 4)  # every data page; the footer still parses
    Path(other).write_bytes(bytes(data))

    d = load(connect(str(dest)), str(dest), top=2, thumbs_per_object=1)
    a, b = d.suspects
    assert (a.uri, a.scan_id, b.uri) == ("/a.mp4", SCAN2, "/b.mp4")
    assert a.timeline == [(0, 0.0, 0.5), (0, 1.0, 0.75)] and a.thumbs == [(0.75, b"a1")]  # best first, one kept
    assert b.timeline == [(0, 0.0, 0.25)] and b.thumbs == [(0.25, b"b0")] and d.has_thumbs


def test_the_page_shows_the_latest_runs_and_counts_them_all(tmp_path):
    """A cron that found the lease held every few minutes wrote 20,000 `busy` records: the page drew each one (178 s,
    6 MB). It shows the latest RUNS_SHOWN of the window, says how many it left out, and its card counts them all."""
    from jobs.report.data import RUNS_SHOWN
    from jobs.report.html import render

    dest, extra = tmp_path / "out", 7
    write_scan(dest, SCAN1, DAY1, [video_row(SCAN1, "/a.mp4", "FAKE", 0.9, DAY1)])
    busy = []
    for i in range(RUNS_SHOWN + extra):
        at = DAY2 + timedelta(minutes=5 * i)
        busy.append(f"{at:%Y%m%dT%H%M%SZ}-{i:06x}")
        write_scan(dest, busy[-1], at, [], status="busy", exit_code=3)

    d = load(connect(str(dest)), str(dest))
    assert [r["scan_id"] for r in d.runs] == busy[-RUNS_SHOWN:] and d.more_runs == extra + 1  # oldest first, as drawn
    page = render(d)
    table = page.split('id="runs"', 1)[1].split("</table>", 1)[0]
    assert table.count('<tr><th scope="row">') == RUNS_SHOWN and busy[-1] in table and busy[extra - 1] not in table
    assert f"{extra + 1} earlier runs of these 30 days left out" in table
    assert '<th scope="col">deleted</th>' in table  # the runs' tombstones (objects found gone), beside skipped
    assert f"<b>{RUNS_SHOWN + extra + 1}</b><span>runs, 30 days</span>" in page
