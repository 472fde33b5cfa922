"""jobs/report/queries.py: the text report, the HTML report's data and the notebook count, group and fail alike."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from jobs.query.errors import QueryError
from jobs.query.formats import jsonable
from jobs.query.sql import connect
from jobs.report.data import load
from jobs.report.queries import read_report
from jobs.report.text import report
from report_fixtures import face_row, one_fake_output, video_row, write_scan

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "scan_analysis.ipynb"


def test_text_and_html_data_agree_on_totals_prefixes_and_suspects(tmp_path):
    one_fake_output(tmp_path / "out")
    text = report(str(tmp_path / "out"))
    data = load(connect(str(tmp_path / "out")), str(tmp_path / "out"))
    assert data.totals == {k: text[k] for k in ("objects", "fakes", "reals", "no_face", "errors", "fake_rate")}
    assert data.totals["fake_rate"] == 1.0
    assert [(p["prefix"], p["fake_rate"]) for p in data.prefixes] == [(p["prefix"], p["fake_rate"]) for p in text["by_prefix_day"]]
    assert [s.uri for s in data.suspects] == [s["uri"] for s in text["top_suspicious"]] == ["/m/a.mp4"]


def test_a_failure_while_reading_is_one_coded_line(tmp_path):
    one_fake_output(tmp_path / "out")
    with pytest.raises(QueryError, match=r"^cannot report on .*out: CatalogException: .*nope") as caught:
        read_report(str(tmp_path / "out"), None, lambda con: con.execute("SELECT * FROM nope"))
    assert caught.value.code == "query_failed" and "\n" not in str(caught.value)


def test_the_notebook_restates_no_report_sql():
    code = "".join("".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code")
    assert "jobs.report.queries" in code
    assert "regexp_replace" not in code and "FILTER (label" not in code  # prefixes and label counts: queries.py


DAY1, DAY2 = datetime(2026, 1, 1, 23, 30, tzinfo=timezone.utc), datetime(2026, 1, 2, 23, 30, tzinfo=timezone.utc)
SCAN1, SCAN2 = "20260101T233000Z-aaaaaa", "20260102T233000Z-bbbbbb"


def _rescanned(dest: Path) -> str:
    """Night 1: a.mp4 FAKE, c.mp4 REAL; night 2 (--full of one folder) rescans a.mp4, now REAL."""
    write_scan(dest, SCAN1, DAY1, [video_row(SCAN1, "s3://b/x/y/a.mp4", "FAKE", 0.9, DAY1),
                                   video_row(SCAN1, "s3://b/x/z/c.mp4", "REAL", 0.1, DAY1)],
               [face_row(SCAN1, "s3://b/x/y/a.mp4", 0, 0.9, DAY1), face_row(SCAN1, "s3://b/x/z/c.mp4", 0, 0.1, DAY1)])
    write_scan(dest, SCAN2, DAY2, [video_row(SCAN2, "s3://b/x/y/a.mp4", "REAL", 0.2, DAY2)],
               [face_row(SCAN2, "s3://b/x/y/a.mp4", 0, 0.2, DAY2)])
    return str(dest)


def test_text_and_page_give_the_same_fake_rate_per_scan_day(tmp_path):
    """The text grouped current verdicts by their latest day (day 1: 0 of 1 fake), the page every scan's rows."""
    output = _rescanned(tmp_path / "out")
    text = report(output)
    data = load(connect(output), output)
    per_day = [(str(d["day"]), d["objects"], d["fakes"], d["reals"], d["fake_rate"]) for d in text["by_day"]]
    assert per_day == [("2026-01-01", 2, 1, 1, 0.5), ("2026-01-02", 1, 0, 1, 0.0)]
    assert text["by_day"] == [{k: jsonable(v) for k, v in d.items()} for d in data.days]
    by_prefix = {}  # per prefix and day: the same rows, split by folder
    for row in text["by_prefix_day"]:
        by_prefix.setdefault(row["day"], []).append(row)
    assert {day: sum(r["fakes"] for r in rows) for day, rows in by_prefix.items()} == \
        {d["day"]: d["fakes"] for d in text["by_day"]}
    assert (text["fakes"], text["reals"]) == (0, 2)  # the totals stay the current verdicts


def test_a_same_day_rerun_counts_each_object_once_that_day(tmp_path):
    """A --retry-errors rerun on night 2 rescans a.mp4 again: night 2 still has one object, its last verdict."""
    output = _rescanned(tmp_path / "out")
    rerun = "20260102T235900Z-cccccc"  # a later scan the same day
    write_scan(tmp_path / "out", rerun, DAY2, [video_row(rerun, "s3://b/x/y/a.mp4", "FAKE", 0.8, DAY2)],
               [face_row(rerun, "s3://b/x/y/a.mp4", 0, 0.8, DAY2)])
    text = report(output)
    per_day = [(str(d["day"]), d["objects"], d["fakes"], d["reals"]) for d in text["by_day"]]
    assert per_day == [("2026-01-01", 2, 1, 1), ("2026-01-02", 1, 1, 0)]
    assert sum(r["objects"] for r in text["by_prefix_day"] if str(r["day"]) == "2026-01-02") == 1
    data = load(connect(output), output)
    assert [(d["n"], len(d["dots"])) for d in data.score_days] == [(2, 2), (1, 1)]


def test_depth_groups_the_pages_prefixes_as_it_groups_the_texts(tmp_path):
    from jobs.report.html import html_report

    output = _rescanned(tmp_path / "out")
    text = report(output, depth=2)
    assert {r["prefix"] for r in text["by_prefix_day"]} == {"s3://b/x/"}
    data = load(connect(output), output, depth=2)
    assert [(p["prefix"], p["objects"]) for p in data.prefixes] == [("s3://b/x/", 2)]
    page = html_report(output, depth=2)
    table = page.split('id="prefixes"', 1)[1].split("</table>", 1)[0]
    assert '<th scope="row">s3://b/x/</th>' in table and "s3://b/x/y/" not in table
    assert "s3://b/x/y/" in html_report(output).split('id="prefixes"', 1)[1].split("</table>", 1)[0]


def test_errors_are_counted_by_code_with_an_example_in_text_and_page(tmp_path):
    """Messages carry URIs and sizes: grouped by message, 30 access-denied objects were 30 rows of 1."""
    from jobs.report.html import html_report

    denied = [video_row(SCAN1, f"s3://b/in/{i:03d}.mp4", "ERROR", None, DAY1, error_code="access_denied",
                        error=f"AccessDenied: s3://b/in/{i:03d}.mp4 ({1000 + i} bytes)") for i in range(30)]
    old = [video_row(SCAN1, f"s3://b/old/{i}.mp4", "ERROR", None, DAY1, error=f"boom {i}") for i in range(2)]
    output = str(write_scan(tmp_path / "out", SCAN1, DAY1, denied + old).root)
    expected = [{"error_code": "access_denied", "objects": 30, "example": "AccessDenied: s3://b/in/000.mp4 (1000 bytes)"},
                {"error_code": "error", "objects": 2, "example": "boom 0"}]  # written before error_code existed
    assert report(output)["top_errors"] == expected
    assert load(connect(output), output).errors == expected
    table = html_report(output).split('id="errors"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 3 and '<th scope="row">access_denied</th><td class="n">30</td>' in table


def test_a_part_whose_score_data_is_corrupt_is_left_out_of_the_report_with_a_warning(tmp_path, caplog):
    """Night 2's videos part has a fine footer but noise for `score` pages: text, page and `report --json` failed with
    `TProtocolException … unreadable part: …` on every run; they leave it (and its faces twin) out, name it in a
    warning and report night 1's verdicts."""
    import logging

    from typer.testing import CliRunner

    from helpers import corrupt_column
    from jobs.cli import app

    output = _rescanned(tmp_path / "out")
    (bad,) = (tmp_path / "out" / "videos").glob(f"scan_date=2026-01-02/part-{SCAN2}-*.parquet")
    corrupt_column(bad, "score")
    with caplog.at_level(logging.WARNING):
        text = report(output)
        con = connect(output)
        data = read_report(output, None, lambda con: load(con, output), con)
    assert f"skipping unreadable part {bad} (" in caplog.text
    assert (text["objects"], text["fakes"], text["reals"]) == (2, 1, 1)  # a.mp4: night 1's FAKE again
    assert data.totals["objects"] == 2 and [s.uri for s in data.suspects] == ["s3://b/x/y/a.mp4", "s3://b/x/z/c.mp4"]
    assert con.execute("SELECT count(*) FROM faces_history").fetchone() == (2,)  # night 2's face left out with its part
    result = CliRunner().invoke(app, ["report", output, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["objects"] == 2, result.output


def test_a_read_that_fails_again_without_the_corrupt_parts_is_retried_once(tmp_path):
    """Leaving the parts out is tried once: a read that still fails is one line naming what was left out."""
    from helpers import corrupt_column

    output = _rescanned(tmp_path / "out")
    (bad,) = (tmp_path / "out" / "videos").glob(f"scan_date=2026-01-02/part-{SCAN2}-*.parquet")
    corrupt_column(bad, "score")
    reads = []

    def read(con):  # fails as undecodable data does (InvalidInputException), whatever the views hold
        reads.append(con.execute("SELECT count(*) FROM videos_history").fetchone()[0])
        return con.execute("SELECT error('still broken')").fetchall()

    with pytest.raises(QueryError, match=rf"still broken \(after leaving out unreadable part: {bad} \(") as caught:
        read_report(output, None, read)
    assert reads == [3, 2] and caught.value.code == "query_failed" and "\n" not in str(caught.value)


def test_an_object_gone_from_the_source_leaves_the_current_verdicts_and_no_day(tmp_path):
    """Night 2 found c.mp4 gone (a tombstone, label DELETED): it leaves the totals, prefixes and suspects (the current
    verdicts), and night 2's per-day counts (no verdict); night 1 still counts what it found. f.mp4, scanned on night
    2 and found gone later that night, counts with its verdict that day. The history keeps them."""
    from jobs.report.queries import ERRORS

    output = _rescanned(tmp_path / "out")
    gone, early = "20260102T235900Z-dddddd", "20260102T234500Z-ffffff"
    write_scan(tmp_path / "out", early, DAY2, [video_row(early, "s3://b/x/z/f.mp4", "REAL", 0.1, DAY2)])
    write_scan(tmp_path / "out", gone, DAY2, [video_row(gone, f"s3://b/x/z/{name}.mp4", "DELETED", None, DAY2)
                                              for name in ("c", "e", "f")])
    write_scan(tmp_path / "out", "20260101T233100Z-eeeeee", DAY1,  # an error, before its object was deleted
               [video_row("20260101T233100Z-eeeeee", "s3://b/x/z/e.mp4", "ERROR", None, DAY1, error_code="not_found")])
    text = report(output)
    per_day = [(str(d["day"]), d["objects"], d["fakes"], d["reals"]) for d in text["by_day"]]
    assert per_day == [("2026-01-01", 3, 1, 1), ("2026-01-02", 2, 0, 2)]
    assert (text["objects"], text["reals"], text["errors"]) == (1, 1, 0)
    data = load(connect(output), output)
    assert data.totals["objects"] == 1 and [p["prefix"] for p in data.prefixes] == ["s3://b/x/y/"]
    assert [s.uri for s in data.suspects] == ["s3://b/x/y/a.mp4"] and data.errors == []
    con = connect(output)
    assert con.execute(ERRORS).fetchall() == []
    assert con.execute("SELECT count(*) FROM videos_history WHERE label = 'DELETED'").fetchone() == (3,)
