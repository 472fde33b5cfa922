"""`report`'s flags (jobs/cli/query.py): their bounds are ReportFlags', so an out-of-range value is a bad setting,
`invalid_configuration` with --json's one line, never typer's usage text."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from jobs.cli import app


@pytest.mark.parametrize("flag, value", [("--top", "0"), ("--depth", "-1"), ("--runs", "-1"), ("--trailing", "0")])
def test_a_report_flag_out_of_range_is_invalid_configuration(tmp_path, flag, value):
    for as_json in (True, False):
        result = CliRunner().invoke(app, ["report", str(tmp_path / "none"), flag, value, *(["--json"] if as_json else [])])
        assert result.exit_code == 2 and "Usage:" not in result.output, result.output
        assert result.stderr.startswith(f"invalid_configuration: {flag}: ") and f"(got {value})" in result.stderr
        if as_json:
            said = json.loads(result.stdout)
            assert said["error_code"] == "invalid_configuration" and said["error"].startswith(f"{flag}: ")
        else:
            assert result.stdout == ""


def test_reports_flags_carry_no_typer_bounds():
    bounded = [p.name for p in typer.main.get_command(app).commands["report"].params
               if getattr(p, "min", None) is not None or getattr(p, "max", None) is not None]
    assert bounded == []


JAPAN = "/media/日本/clip.mp4"


def _japanese_output(tmp_path) -> str:
    from helpers import one_row_output

    return one_row_output(tmp_path, JAPAN)


def test_a_terminal_that_cannot_show_a_character_gets_it_escaped_and_a_csv_export_is_utf8(tmp_path):
    """LC_ALL=de_DE.ISO-8859-1: the table and `report` (its em dash) died with UnicodeEncodeError, and the CSV export
    died part-way, its file cut short."""
    output = _japanese_output(tmp_path)
    runner = CliRunner(charset="latin-1")  # stdout encoded as such a terminal's, strict as Python's stdout is
    table = runner.invoke(app, ["query", "-o", output, "SELECT uri FROM videos"])
    assert table.exit_code == 0, table.output
    assert "/media/\\u65e5\\u672c/clip.mp4" in table.stdout
    report = runner.invoke(app, ["report", output])
    assert report.exit_code == 0 and "\\u2014" in report.stdout, report.output
    export = runner.invoke(app, ["query", "-o", output, "-f", "csv", "SELECT uri, label FROM videos"])
    assert export.exit_code == 0 and export.stdout_bytes.decode("utf-8") == f"uri,label\n{JAPAN},FAKE\n"


def test_query_needs_no_home(tmp_path):
    """A container's uid without a passwd entry and HOME unset: every command died at import (the ONNX cache's default
    was ~/.cache, resolved then)."""
    import os
    import subprocess
    import sys

    no_home = ("import pathlib, runpy\n"
               "def home():\n    raise RuntimeError('Could not determine home directory.')\n"
               "pathlib.Path.home = staticmethod(home)\n"
               "runpy.run_module('jobs.cli', run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME")}
    proc = subprocess.run([sys.executable, "-c", no_home, "query", "-o", _japanese_output(tmp_path), "-f", "json",
                           "SELECT label FROM videos"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout) == [{"label": "FAKE"}], proc.stderr
