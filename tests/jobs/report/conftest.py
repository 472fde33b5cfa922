"""One real scan of the bundled samples (a real local Ray) shared by the report and notebook tests."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # report_fixtures beside this file

FRAMES = 8  # fewer sampled frames than the default: the same graph, a faster scan


@pytest.fixture(scope="session")
def report_settings(detector_env):
    from pipeline.config import load_settings

    return load_settings(**{"decode.num_frames": FRAMES})


@pytest.fixture(scope="session")
def sample_scan(ray_session, report_settings, samples_dir, tmp_path_factory) -> Path:
    """DEST of a finished scan of pipeline/samples; copy it before changing it (``scan_copy``)."""
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan

    dest = tmp_path_factory.mktemp("report-scan") / "out"
    summary = run_scan(report_settings, ScanConfig(source=str(samples_dir), output=str(dest), progress=False))
    assert summary.exit_code == 0 and summary.scanned == 6, summary
    return dest


@pytest.fixture()
def scan_copy(sample_scan, tmp_path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(sample_scan, dest, ignore=shutil.ignore_patterns("_lease*"))
    return dest
