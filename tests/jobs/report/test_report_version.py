"""`--version`'s line (jobs/report/version.py): the installed package, the shipped detector, torch/ray/python."""

from __future__ import annotations

import json
import platform
import tomllib
from importlib import metadata
from pathlib import Path

from jobs.report import version

ROOT = Path(__file__).resolve().parents[3]


def test_package_version_is_the_installed_distribution_or_says_unknown(monkeypatch):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    try:
        installed = metadata.version("deepfakestream")
    except metadata.PackageNotFoundError:
        installed = None
    assert version.package_version() == (installed or "0+unknown")
    assert installed in (None, declared)

    def missing(_name):
        raise metadata.PackageNotFoundError(_name)

    monkeypatch.setattr(version.metadata, "version", missing)
    assert version.package_version() == "0+unknown"


def test_detector_version_comes_from_the_shipped_card(tmp_path):
    card = ROOT / "pipeline" / "checkpoints" / "detector.json"
    if card.is_file():
        assert version.detector_version() == json.loads(card.read_text())["version"]
    assert version.detector_version(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert version.detector_version(tmp_path / "bad.json") is None


def test_version_line_names_package_detector_and_runtime():
    line = version.version_line()
    assert line.startswith(f"deepfakestream {version.package_version()} (detector ")
    assert f"torch {metadata.version('torch')}" in line and f"python {platform.python_version()}" in line
    assert "\n" not in line


def test_version_names_package_detector_and_libraries():
    from typer.testing import CliRunner

    from jobs.cli import app
    from jobs.report.version import detector_version

    out = CliRunner().invoke(app, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("deepfakestream ")
    assert f"detector {detector_version()}" in out.output and "torch " in out.output
