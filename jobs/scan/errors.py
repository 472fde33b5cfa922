"""Why a scan could not run or stopped part-way (their exit codes: ``jobs/scan/exit_codes.py``)."""

from __future__ import annotations

from pipeline.errors import DeepfakeStreamError


CRASHED = "scan_crashed"  # the code of an unexpected exception (a fault of ours or of the storage)


class ScanError(DeepfakeStreamError):
    """The scan itself cannot run (bad source, unusable output, no model, no cluster)."""

    code = "scan_error"


class SourceNotFoundError(ScanError):
    """The source names no object and no prefix with objects (a mistyped or removed prefix)."""

    code = "source_not_found"


class ClusterBusyError(ScanError):
    """The Ray cluster has no room for the scan's actors: too little CPU (or GPU) free for one when it starts, or its
    pools' actors not started within ``scan.actor_start_timeout`` (others hold the rest, or the pools do not fit the
    nodes that may host them)."""

    code = "cluster_busy"


class ScanAborted(DeepfakeStreamError):
    """The scan started but Ray Data gave up (more failed batches than --max-failed-batches)."""

    code = "scan_aborted"
