"""``deepfakestream --version``: the installed distribution, the shipped detector and what changes scores."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from pipeline.card import read_card
from pipeline.config import DEFAULT_CHECKPOINT
from pipeline.errors import DeepfakeStreamError

DIST = "deepfakestream"


def package_version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:  # a checkout that was never pip-installed
        return "0+unknown"


def detector_version(checkpoint: Path = DEFAULT_CHECKPOINT) -> str | None:
    """The version on the model card of ``checkpoint`` (the shipped detector); None when there is none to read."""
    try:
        return read_card(checkpoint).version
    except (DeepfakeStreamError, OSError):  # no checkpoint, no card, an invalid card: "not installed"
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
