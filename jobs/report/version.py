"""``deepfakestream --version``: the installed distribution, the shipped detector and what changes scores."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

DIST = "deepfakestream"
CARD = Path(__file__).resolve().parents[2] / "pipeline" / "checkpoints" / "detector.json"


def package_version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:  # a checkout that was never pip-installed
        return "0+unknown"


def detector_version(card: Path = CARD) -> str | None:
    """The shipped model card's version, read as JSON (importing torch to ask would take seconds)."""
    try:
        return json.loads(card.read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def version_line() -> str:
    """One line for ``--version``: ``deepfakestream 0.1.0 (detector …; torch …, ray …, python …)``."""
    deps = []
    for dist in ("torch", "ray"):
        try:
            deps.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    deps.append(f"python {platform.python_version()}")
    return f"{DIST} {package_version()} (detector {detector_version() or 'not installed'}; {', '.join(deps)})"
