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
