"""The text report (jobs/report/text.py) on hand-made outputs: bounded whatever the output's size, and nothing from
the output reaches the terminal as a control sequence."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from typer.testing import CliRunner

from jobs.report.html import html_report
from jobs.report.queries import TOP_PREFIXES, WINDOW_DAYS
from jobs.report.text import report
from report_fixtures import video_row, write_scan

START = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)


def _app():
    from jobs.cli import app

    return app


def test_escape_sequences_in_keys_and_messages_are_written_out(tmp_path):
    """A key can retitle the terminal, clear it or hide what follows; printed, it is text."""
    key = "s3://b/\x1b]0;pwned\x07\x1b[2J/clip\x9b31m.mp4"
    scan = f"{START:%Y%m%dT%H%M%SZ}-aaaaaa"
    write_scan(tmp_path / "out", scan, START, [
        video_row(scan, key, "FAKE", 0.9, START),
        video_row(scan, "s3://b/x/bad.mp4", "ERROR", None, START, error="boom \x1b[31mred", error_code="decode\x07")])
    result = CliRunner().invoke(_app(), ["report", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert not any(c in result.output for c in "\x1b\x07\x9b"), repr(result.output)
    assert "s3://b/\\x1b]0;pwned\\x07\\x1b[2J/clip\\x9b31m.mp4" in result.output  # the key, as text
    assert "boom \\x1b[31mred" in result.output and "decode\\x07" in result.output
    assert "s3://b/\\x1b]0;pwned\\x07\\x1b[2J/" in result.output  # its prefix too


def _many(dest, prefixes: int, days: int):
    """One scan a day for ``days`` days; each scans one object in each of ``prefixes`` folders, folder p with a FAKE
    on p's share of the days (so folders rank by fakes)."""
    scans = []
    for day in range(days):
        at = START + timedelta(days=day)
        scan = f"{at:%Y%m%dT%H%M%SZ}-{day:06x}"
        write_scan(dest, scan, at, [video_row(scan, f"s3://b/u{p:02d}/{day}.mp4", "FAKE" if day % (p + 1) == 0 else "REAL",
                                              0.9 if day % (p + 1) == 0 else 0.1, at) for p in range(prefixes)])
        scans.append(scan)
    return scans


def test_tables_hold_the_top_prefixes_and_the_last_days_and_say_what_is_left_out(tmp_path):
    """40 days of 25 folders: the per-day tables cover the last WINDOW_DAYS days and the TOP_PREFIXES folders with the
    most fakes (the text, its JSON and the page alike), and say how many prefixes are left out."""
    scans = _many(tmp_path / "out", prefixes=TOP_PREFIXES + 5, days=WINDOW_DAYS + 10)
    output = str(tmp_path / "out")
    data = report(output)
    first = (START + timedelta(days=10)).date().isoformat()
    assert data["since"] == first and [d["day"] for d in data["by_day"]][0] == first and len(data["by_day"]) == WINDOW_DAYS
    kept = list(dict.fromkeys(r["prefix"] for r in data["by_prefix_day"]))
    assert kept == [f"s3://b/u{p:02d}/" for p in range(TOP_PREFIXES)]  # most fakes first
    assert len(data["by_prefix_day"]) == TOP_PREFIXES * WINDOW_DAYS and data["more_prefixes"] == 5
    result = CliRunner().invoke(_app(), ["report", output])
    assert result.exit_code == 0 and "5 more prefixes: use `deepfakestream query`" in result.output, result.output
    assert "u24/" not in result.output
    result = CliRunner().invoke(_app(), ["report", output, "--json"])
    assert json.loads(result.stdout)["more_prefixes"] == 5

    page = html_report(output)
    table = page.split('id="prefixes"', 1)[1].split("</table>", 1)[0]
    assert table.count('<tr><th scope="row">') == TOP_PREFIXES and "5 more prefixes" in table and "u24/" not in table
    runs = page.split('id="runs"', 1)[1].split("</table>", 1)[0]
    assert runs.count('<tr><th scope="row">') == WINDOW_DAYS and scans[-1] in runs and scans[9] not in runs


def test_a_nan_score_is_no_suspect_and_a_null_score_prints(tmp_path):
    """DuckDB sorts NaN above every number: NaN-scored objects topped "most suspicious", and their score (null in JSON)
    crashed the text report with a TypeError. (The run also marked 3 objects deleted: its row says so.)"""
    from jobs.report.text import print_report

    scan = f"{START:%Y%m%dT%H%M%SZ}-aaaaaa"
    write_scan(tmp_path / "out", scan, START, [video_row(scan, f"s3://b/nan/{i}.mp4", "REAL", float("nan"), START)
                                               for i in range(3)] + [video_row(scan, "s3://b/x/a.mp4", "FAKE", 0.9, START)],
               deleted=3)
    output = str(tmp_path / "out")
    for args in ([], ["--json"]):
        result = CliRunner().invoke(_app(), ["report", output, *args])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        if not args:  # recent runs: listed, skipped, scanned, deleted, failed, quarantined
            (run,) = [line.split() for line in result.output.splitlines() if line.strip().startswith(scan)]
            assert run[-6:] == ["0", "0", "4", "3", "0", "0"], run
    assert [(s["uri"], s["score"]) for s in json.loads(result.stdout)["top_suspicious"]] == [("s3://b/x/a.mp4", 0.9)]
    page = html_report(output)
    assert "s3://b/x/a.mp4" in page and "s3://b/nan/" not in page.split("Most suspicious objects", 1)[1]

    data = report(output)
    data["top_suspicious"][0]["score"] = None  # as JSON holds a NaN score (jsonable)
    print_report(data)
