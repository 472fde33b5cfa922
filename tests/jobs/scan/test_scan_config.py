"""The scan's settings (jobs/scan/config.py): blank paths and endless waits are refused before a scan starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from jobs.scan.config import ScanConfig
from pipeline.config import load_settings


@pytest.mark.parametrize("key", ["source", "output"])
@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_source_or_output_is_refused_not_the_current_directory(monkeypatch, key, blank):
    with pytest.raises(ValidationError, match=f"scan.{key} must name a folder or a URI, not be blank"):
        ScanConfig(**{key: blank})
    monkeypatch.setenv(f"DFS_SCAN__{key.upper()}", blank)
    with pytest.raises(ValidationError, match=f"from environment variable DFS_SCAN__{key.upper()}"):
        load_settings()


def test_scan_with_a_blank_output_exits_2_and_writes_nothing(tmp_path, monkeypatch):
    from jobs.cli import app

    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "src"), "--output", "", "--no-progress"])
    assert result.exit_code == 2 and "scan.output must name a folder or a URI" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no _runs, videos, faces in the cwd


@pytest.mark.parametrize("key", ["lease_seconds", "stop_timeout", "commit_seconds"])
@pytest.mark.parametrize("value", [float("inf"), 1e12, 86401])
def test_waits_are_finite_and_at_most_a_day(key, value):
    """inf and 1e12 overflowed later: the lease's expiry (OverflowError), the SIGTERM watchdog's timer."""
    with pytest.raises(ValidationError, match=key):
        ScanConfig(**{key: value})
    assert getattr(ScanConfig(**{key: 86400}), key) == 86400


def test_a_source_whose_name_is_not_utf8_is_refused_not_a_crash(tmp_path):
    """A folder named in Latin-1 (`l\\xe9gacy`) crashed the scan (scan_crashed, no run record, "run again to resume",
    which never could): it is invalid_configuration, exit 2, before anything starts. Names under it are `unlisted`."""
    import json
    import os

    from jobs.cli import app

    source = os.fsdecode(os.fsencode(str(tmp_path)) + b"/l\xe9gacy")
    os.mkdir(source)
    result = CliRunner().invoke(app, ["scan", source, "-o", str(tmp_path / "out"), "--json", "--no-progress"])
    assert result.exit_code == 2, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["error_code"] == "invalid_configuration" and "not valid UTF-8" in summary["message"]
    assert not (tmp_path / "out").exists()
