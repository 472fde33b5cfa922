"""The HTML report on a real scan of the bundled samples: self-contained, right content, looked at in Chromium.

Outputs: the scan as it is (its face thumbnails, one run), the scan widened to enough objects for drift to be
judged plus a second run whose scores were shifted on purpose (drift flagged), the same with an unshifted second
run (no flag), and older outputs without thumbnails.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.report.browser import chromium, probe, screenshot
from jobs.report.html import html_report, write_html_report
from pipeline.thumbs import MAX_BYTES
from report_fixtures import add_shifted_run, drop_thumbnails, one_fake_output, widen

pytestmark = pytest.mark.slow

SCORED = ("astronaut.jpg", "astronauts_pair.jpg", "astronaut_zoom.mp4", "astronaut_swap.mp4", "pair_pan.mp4")


def _self_contained(page: str) -> None:
    """Nothing the browser would fetch: every src is a data: URI, no stylesheet or script links."""
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r"<link\b|<script\b[^>]*\bsrc=|url\(|@import", page)
    assert "http://" not in page and "https://" not in page


def _runs_rows(page: str) -> list[str]:
    table = page.split('id="runs"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr><th scope="row">([^<]+)</th>', table)


def _thumbnails(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)]


def _looked_at(page_path: Path, png: Path) -> Image.Image:
    """Chromium decoded every image and drew a page that is not blank, the page's CSP blocking nothing it needs; in a
    500 px window (a phone, or a desktop zoomed to 200-400%) nothing makes the page scroll sideways: the suspects'
    cards fold to one column and wide tables scroll inside their own box."""
    if not chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    seen = probe(page_path, width=500)
    assert seen["images"] > 0 and seen["decoded"] == seen["images"] and seen["violations"] == 0, seen
    assert seen["overflow"] == 0, seen
    screenshot(page_path, png)
    image = Image.open(png).convert("L")
    assert image.width == 1100 and image.height > 1500  # the whole page, not a window's worth
    assert np.asarray(image).std() > 20  # text and plots, not a blank or error page
    return image


def test_report_of_a_scan_has_runs_suspects_and_the_scans_thumbnails(sample_scan, tmp_path):
    page = html_report(str(sample_scan))
    _self_contained(page)
    scan_id = next((sample_scan / "_runs").glob("*.json")).stem
    assert _runs_rows(page) == [scan_id]
    assert 'data-status="insufficient"' in page and "no earlier scan" in page
    assert 'id="no-thumbs"' not in page and len(_thumbnails(page)) >= len(SCORED)  # stored by the scan itself
    for name in SCORED:
        assert f"/{name}</h3>" in page
    assert "coffee.jpg</h3>" not in page  # no face, no score: not a suspect
    # each suspect's plot is described by its own faces: its name, people, faces, scores against the threshold
    alts = {name: alt for alt, name in re.findall(r'alt="(Face scores of ([^ :"]+)[^"]*)"', page)}
    assert set(alts) == {Path(n).name for n in SCORED}, alts
    assert re.fullmatch(r"Face scores of astronauts_pair\.jpg: 2 people, 2 faces, scores 0\.\d\d to [01]\.\d\d(, \d "
                        r"at or above the threshold [01]\.\d{3})\.", alts["astronauts_pair.jpg"])
    assert " s of video: 2 people, " in alts["pair_pan.mp4"]
    assert page.count("<li>person ") == 4  # the two people of pair_pan.mp4 and of astronauts_pair.jpg, each listed
    path = write_html_report(str(sample_scan), tmp_path / "report.html")
    _looked_at(path, tmp_path / "report.png")


def test_report_flags_a_shifted_run_and_shows_face_thumbnails(scan_copy, tmp_path):
    first = next((scan_copy / "_runs").glob("*.json")).stem
    widen(scan_copy, 23)  # 120 scored objects a scan: enough to judge
    second = add_shifted_run(scan_copy, shift=0.3)
    page = write_html_report(str(scan_copy), tmp_path / "report.html").read_text()
    _self_contained(page)
    assert _runs_rows(page) == [second, first]  # newest first
    banner = page.split('id="drift-status"', 1)[1].split("</div>", 1)[0]
    assert 'data-status="drift"' in banner and '<span class="flag">score_shift</span>' in banner
    drift = page.split('id="drift"', 1)[1].split("</table>", 1)[0]
    assert f"<td>{first}</td>" in drift and f"<td>{second}</td>" in drift  # trailing vs latest
    # the histogram in words: its alt names the verdict, a table gives each bin's share on both sides
    assert re.search(r'alt="Share of objects per score bin[^"]*: flagged as drift\.', page)
    assert page.split('id="drift-bins"', 1)[1].split("</table>", 1)[0].count('<tr><th scope="row">') == 10
    thumbs = _thumbnails(page)
    assert len(thumbs) >= len(SCORED) and 'id="no-thumbs"' not in page
    for jpeg in thumbs:
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG" and max(image.size) <= 64 and len(jpeg) <= MAX_BYTES
    shot = _looked_at(tmp_path / "report.html", tmp_path / "report.png")
    # the banner is drawn red near the top of the page: the flag is visible, not only in the markup
    top = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))[:400].reshape(-1, 3).astype(int)
    assert ((top[:, 0] > 180) & (top[:, 1] < 90) & (top[:, 2] < 90)).sum() > 200, shot.size


def test_an_unshifted_second_run_is_not_flagged(scan_copy):
    widen(scan_copy, 23)
    add_shifted_run(scan_copy, shift=0.0)
    page = html_report(str(scan_copy))
    assert 'data-status="ok"' in page and "No drift" in page and 'class="flag"' not in page


def test_the_report_command_writes_the_page_and_fails_with_a_code(sample_scan, tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    ok = CliRunner().invoke(app, ["report", str(sample_scan), "--html", str(tmp_path / "r.html")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>") and "HTML report:" in ok.output
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nothing-here"), "--html", str(tmp_path / "x.html")])
    assert bad.exit_code == 1 and "no scan output at" in bad.output and not (tmp_path / "x.html").exists()
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    blocked = CliRunner().invoke(app, ["report", str(sample_scan), "--html", str(unwritable / "r.html")])
    assert blocked.exit_code == 2 and "cannot write the HTML report" in blocked.output
    # the page goes in whole or not at all: a failed replace leaves no temporary file behind
    taken = tmp_path / "taken.html"
    taken.mkdir()
    refused = CliRunner().invoke(app, ["report", str(sample_scan), "--html", str(taken)])
    assert refused.exit_code == 2 and "cannot write the HTML report" in refused.output
    assert taken.is_dir() and not list(tmp_path.glob(".taken.html.*"))


def test_old_parts_without_thumbnails_and_new_parts_with_them_report_together(scan_copy):
    first = next((scan_copy / "_runs").glob("*.json")).stem
    add_shifted_run(scan_copy, shift=0.0)  # a later scan, with the thumbnails it stored
    assert drop_thumbnails(scan_copy, first) >= len(SCORED)  # the first run as a schema-2 scan wrote it
    page = html_report(str(scan_copy))
    assert 'id="no-thumbs"' not in page and len(_thumbnails(page)) >= len(SCORED)
    drop_thumbnails(scan_copy)  # no part has the column (older outputs, or scan.thumbnails: 0): said, not failed
    page = html_report(str(scan_copy))
    assert 'id="no-thumbs"' in page and not _thumbnails(page)


def test_an_empty_output_reports_without_plots(tmp_path):
    from jobs.scan.output import OutputStore

    OutputStore(str(tmp_path / "out")).prepare()  # a manifest, no scan yet
    page = html_report(str(tmp_path / "out"))
    assert "no run records" in page and "no scored objects" in page and 'data-status="insufficient"' in page
    assert "<img" not in page
    prefixes = page.split('id="prefixes"', 1)[1].split("</table>", 1)[0]
    assert '<td colspan="6">no current verdicts</td>' in prefixes  # an empty body said, as the other tables say it


def test_a_scan_with_thumbnails_off_is_said_to_have_none(tmp_path):
    """``scan --thumbnails 0`` on a schema-3 output writes the column, all null: the page says there are none."""
    one_fake_output(tmp_path / "out")
    page = html_report(str(tmp_path / "out"))
    assert 'id="no-thumbs"' in page and "/m/a.mp4</h3>" in page and not _thumbnails(page)


def test_a_faces_part_whose_data_breaks_mid_read_is_left_out_with_a_warning(tmp_path, caplog):
    import logging

    from typer.testing import CliRunner

    from jobs.cli import app

    store = one_fake_output(tmp_path / "out")
    (faces,) = store.list_parts("faces").values()
    data = bytearray(Path(faces).read_bytes())
    data[4:200] = b"\xff" * 196  # the data pages: the footer still parses, so the views take it
    Path(faces).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, ["report", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0 and (tmp_path / "r.html").exists(), result.output  # from the other parts
    assert f"skipping unreadable part {faces} (" in caplog.text  # DuckDB's own message names no file
    assert "Traceback" not in result.output


def test_the_scan_stores_thumbnails_of_each_objects_top_faces(sample_scan):
    """scan.thumbnails (default 3): the faces table holds JPEGs for each object's top-scoring faces only."""
    import pyarrow.dataset as pads

    from jobs.scan.config import ScanConfig

    keep = ScanConfig().thumbnails
    faces = pads.dataset(sample_scan / "faces", format="parquet", partitioning="hive").to_table()
    assert faces.schema.field("thumb_jpeg").type == "binary"
    by_uri: dict[str, list] = {}
    for uri, score, jpeg in zip(faces["uri"].to_pylist(), faces["score"].to_pylist(), faces["thumb_jpeg"].to_pylist()):
        by_uri.setdefault(uri, []).append((score, jpeg))
    assert {Path(u).name for u in by_uri} == set(SCORED)
    for uri, rows in by_uri.items():
        kept = [s for s, j in rows if j is not None]
        assert len(kept) == min(keep, len(rows)), uri
        assert min(kept) >= max([s for s, j in rows if j is None], default=0.0)  # the top-scoring ones
        for _, jpeg in rows:
            if jpeg is not None:
                image = Image.open(io.BytesIO(jpeg))
                assert image.format == "JPEG" and max(image.size) <= 64 and len(jpeg) <= MAX_BYTES


def test_report_with_html_lists_the_output_and_builds_its_views_once(tmp_path, monkeypatch):
    """The text and the page read one connection: on an output of thousands of parts (S3: thousands of GETs) each
    connection lists and describes every part (about 14 s on a 4,756-part output)."""
    from typer.testing import CliRunner

    import jobs.query.sql as sql
    import jobs.report.queries as queries
    from jobs.cli import app

    opened = []
    real = sql.connect

    def counting(*args, **kwargs):  # a spy: the real connection, counted
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(sql, "connect", counting)
    monkeypatch.setattr(queries, "connect", counting)
    one_fake_output(tmp_path / "out")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").stat().st_size > 0 and opened == [str(tmp_path / "out")]
