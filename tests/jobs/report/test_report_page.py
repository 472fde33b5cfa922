"""The HTML page on hand-made outputs (no Ray): object keys matplotlib would misread, a scan still running, and a
plot that fails to draw, each reported as it is or in one coded line; the browser loads nothing else (its CSP)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

from jobs.query.sql import connect
from jobs.report.data import load
from jobs.report.html import ReportError, html_report, write_html_report
from report_fixtures import face_row, video_row, write_scan

AT = datetime(2026, 1, 1, 23, 30, tzinfo=timezone.utc)
SCAN = "20260101T233000Z-aaaaaa"
DOLLARS = "s3://b/x/cost_$100_$200.mp4"  # a pair of $: mathtext to matplotlib, which cannot parse it


def _app():
    from jobs.cli import app

    return app


def test_a_key_with_dollar_signs_is_drawn_as_it_is(tmp_path):
    write_scan(tmp_path / "out", SCAN, AT, [video_row(SCAN, DOLLARS, "FAKE", 0.9, AT)],
               [face_row(SCAN, DOLLARS, 0, 0.9, AT), face_row(SCAN, DOLLARS, 1, 0.8, AT)])
    result = CliRunner().invoke(_app(), ["report", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert f"<h3>{DOLLARS}</h3>" in page
    # the plot's alt says what it shows for this object (its name, its faces against the threshold)
    assert ('alt="Face scores of cost_$100_$200.mp4 over 0.0 to 1.0 s of video: 1 person, 2 faces, scores 0.80 to '
            '0.90, 2 at or above the threshold 0.500."') in page


def test_a_plot_that_fails_to_draw_is_one_coded_line(tmp_path, monkeypatch):
    from jobs.report import plots

    def broken(*args, **kwargs):
        raise ValueError("bad glyph\nand pages of matplotlib detail")

    write_scan(tmp_path / "out", SCAN, AT, [video_row(SCAN, "/a.mp4", "FAKE", 0.9, AT)], [face_row(SCAN, "/a.mp4", 0, 0.9, AT)])
    monkeypatch.setattr(plots, "timeline_plot", broken)
    try:
        html_report(str(tmp_path / "out"))
    except ReportError as exc:
        assert exc.code == "report_failed" and str(exc) == "cannot draw the report: ValueError: bad glyph"
    else:
        raise AssertionError("drew a page with a broken plot")
    result = CliRunner().invoke(_app(), ["report", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "cannot write the HTML report: cannot draw the report: ValueError: bad glyph" \
        in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "r.html").exists()


def test_a_running_scan_shows_no_exit_code_yet(tmp_path):
    from jobs.report import plots

    write_scan(tmp_path / "out", SCAN, AT, [video_row(SCAN, "/a.mp4", "FAKE", 0.9, AT)], status="running", exit_code=None)
    page = html_report(str(tmp_path / "out"))
    row = page.split('id="runs"', 1)[1].split("</table>", 1)[0].split(f'<tr><th scope="row">{SCAN}</th>', 1)[1].split("</tr>", 1)[0]
    assert re.match(r'<td>running</td><td class="n">—</td>', row) and "None" not in row, row
    figure = plots.runs_plot(load(connect(str(tmp_path / "out")), str(tmp_path / "out")).runs)
    assert [t.get_text() for t in figure.axes[0].texts] == ["1 scanned\nrunning"]


def test_the_page_says_when_scans_are_too_small_to_judge(tmp_path):
    """Two 5-object nights wide apart: 5 objects are too few to tell a shift from chance, and the banner says so."""
    later = datetime(2026, 1, 2, 23, 30, tzinfo=timezone.utc)
    second = "20260102T233000Z-bbbbbb"
    write_scan(tmp_path / "out", SCAN, AT, [video_row(SCAN, f"/d1/{i}.mp4", "REAL", 0.1, AT) for i in range(5)])
    write_scan(tmp_path / "out", second, later,
               [video_row(second, f"/d2/{i}.mp4", "FAKE", 0.9, later) for i in range(4)]
               + [video_row(second, "/d2/e.mp4", "ERROR", None, later, error="boom")])
    banner = html_report(str(tmp_path / "out")).split('id="drift-status"', 1)[1].split("</div>", 1)[0]
    assert 'data-status="insufficient"' in banner and 'class="flag"' not in banner
    assert "too few scored objects to judge scores (4 latest, 5 trailing; need 100 on each side)" in banner


def test_the_browser_draws_the_whole_page_and_loads_nothing_else(tmp_path):
    """Its Content-Security-Policy lets in the inline style and the data: images and nothing else: Chromium draws
    every image under it without a blocked load, and blocks a script or a remote image a key could smuggle in."""
    from jobs.report.browser import chromium, probe
    from jobs.report.template import CSP

    if not chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    write_scan(tmp_path / "out", SCAN, AT, [video_row(SCAN, "/a.mp4", "FAKE", 0.9, AT)], [face_row(SCAN, "/a.mp4", 0, 0.9, AT)])
    page = write_html_report(str(tmp_path / "out"), tmp_path / "r.html")
    text = page.read_text(encoding="utf-8")
    assert f'<meta charset="utf-8">\n<meta http-equiv="Content-Security-Policy" content="{CSP}">' in text
    seen = probe(page)
    assert seen["violations"] == 0 and seen["decoded"] == seen["images"] > 0 and seen["height"] > 1500, seen
    hostile = tmp_path / "hostile.html"
    hostile.write_text(text.replace("</main>", '<img src="http://127.0.0.1:9/x.png"><script>document.title="ran"</script></main>'),
                       encoding="utf-8")
    assert probe(hostile)["violations"] == 2


class _Tables(HTMLParser):
    """Each table's caption, header cells (scope, text) and the first cell of each body row; each image's alt."""

    def __init__(self):
        super().__init__()
        self.tables, self.alts, self.cell, self.part, self.row_start = [], [], None, None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"id": attrs.get("id"), "caption": "", "th": [], "row_heads": []})
        elif tag in ("thead", "tbody", "caption"):
            self.part = tag
        elif tag == "tr":
            self.row_start = True
        elif tag in ("th", "td"):
            if self.part == "tbody" and self.row_start and "colspan" not in attrs:
                self.tables[-1]["row_heads"].append(f"{tag} {attrs.get('scope')}")
            self.row_start = False
            self.cell = [tag, attrs.get("scope"), ""]
            if tag == "th":
                self.tables[-1]["th"].append(self.cell)
        elif tag == "img":
            self.alts.append(attrs.get("alt") or "")

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self.cell = None
        elif tag == "caption":
            self.part = None

    def handle_data(self, data):
        if self.part == "caption":
            self.tables[-1]["caption"] += data
        if self.cell is not None:
            self.cell[2] += data


def test_every_table_has_a_caption_scoped_headers_and_row_headers(tmp_path):
    """A screen reader names a cell by its headers: every <th> scoped, none empty (the drift table's corner was),
    each body row led by its row header (the drift table's "trailing", "latest" were <td>); every table captioned."""
    later = AT.replace(day=2)
    second = "20260102T233000Z-bbbbbb"
    write_scan(tmp_path / "out", SCAN, AT, [video_row(SCAN, "/a.mp4", "FAKE", 0.9, AT)], [face_row(SCAN, "/a.mp4", 0, 0.9, AT)])
    write_scan(tmp_path / "out", second, later, [video_row(second, "/b.mp4", "REAL", 0.2, later),
                                                 video_row(second, "/c.mp4", "ERROR", None, later, error="boom")])
    parsed = _Tables()
    parsed.feed(html_report(str(tmp_path / "out")))
    assert [t["id"] for t in parsed.tables] == ["runs", "prefixes", "errors", "score-days", "drift-bins", "drift"]
    for table in parsed.tables:
        assert table["caption"].strip(), table
        assert all(scope in ("col", "row") and text.strip() for _tag, scope, text in table["th"]), table
        assert table["row_heads"] and set(table["row_heads"]) == {"th row"}, table
    drift = parsed.tables[-1]
    assert [text for _t, scope, text in drift["th"] if scope == "row"] == ["trailing", "latest"]
    assert all(alt.strip() for alt in parsed.alts) and len(set(parsed.alts)) == len(parsed.alts), parsed.alts
