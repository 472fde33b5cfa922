"""jobs/report/queries.py: the text report, the HTML report's data and the notebook count, group and fail alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.query.sql import QueryError, connect
from jobs.report.data import load
from jobs.report.queries import read_report
from jobs.report.text import report
from report_fixtures import one_fake_output

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
