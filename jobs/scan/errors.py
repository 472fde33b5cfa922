"""Why a scan could not run or stopped part-way (their exit codes: ``jobs/scan/exit_codes.py``)."""

from __future__ import annotations

from pipeline.errors import DeepfakeStreamError


class ScanError(DeepfakeStreamError):
    """The scan itself cannot run (bad source, unusable output, no model, no cluster)."""


class ScanAborted(DeepfakeStreamError):
    """The scan started but Ray Data gave up (more failed batches than --max-failed-batches)."""
