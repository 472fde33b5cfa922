"""Exit statuses of ``deepfakestream scan``: what a scheduler (CronJob, RayJob, cron) alerts on.

Every status comes with a run record in ``DEST/_runs`` (docs/scan.md), except ``NOT_STARTED`` when the
model could not be loaded or the output not reached at all.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0               # the scan ran; its error share was within --max-error-rate
    ABORTED = 1          # started, then stopped part-way (Ray Data gave up, or the lease was lost)
    NOT_STARTED = 2      # could not start: no model, bad settings, source or output unusable, no Ray; or the
                         # output refused a part or the run record part-way (status output_error)
    BUSY = 3             # another scan holds DEST's lease: nothing was done
    TOO_MANY_ERRORS = 4  # the scan ran and committed everything, but ERROR rows exceed --max-error-rate
    INTERRUPTED = 130    # Ctrl-C (SIGINT): finished rows committed
    TERMINATED = 143     # SIGTERM (Kubernetes, `ray job stop`): finished rows committed


__all__ = ["ExitCode"]
