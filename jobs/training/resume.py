"""``--resume`` only with the settings a run was started with; what may differ (paths, threads) is listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.training.config import TrainConfig
from pipeline.errors import DeepfakeStreamError


class ResumeMismatchError(DeepfakeStreamError, ValueError):
    """``--resume`` with settings that differ from the run's own: the saved optimizer and schedule would carry
    the old ones on silently (or fail deep in torch), so the run must be resumed as it was started."""

    code = "resume_mismatch"


# may differ on resume: where the data and the run live, and how this machine runs it
RESUME_FREE = {"dataset", "out_dir", "extra_datasets", "resume", "threads", "num_workers", "use_gpu", "version",
               "data_description", "patience"}


_UNKNOWN = object()


def _default(name: str) -> Any:
    """A TrainConfig field's default as JSON would hold it; _UNKNOWN when it has none plain enough to compare."""
    value = TrainConfig.model_fields[name].get_default(call_default_factory=True)
    return value if value is None or isinstance(value, (bool, int, float, str)) else _UNKNOWN


def check_resume(saved: dict | None, config: TrainConfig, path: Path) -> None:
    if saved is None:
        return
    now = config.model_dump(mode="json")
    # a setting newer than the run was not in its config: the run had that setting's default (new options
    # default to the old behaviour), so resuming with any other value would change it mid-run
    was = {k: saved[k] if k in saved else _default(k) for k in now}
    changed = sorted(k for k in now if k not in RESUME_FREE and was[k] is not _UNKNOWN and was[k] != now[k])
    if changed:
        raise ResumeMismatchError(f"{path} was started with " + ", ".join(f"{k}={was[k]!r}" for k in changed)
                                  + "; resume with the same settings (here: " + ", ".join(f"{k}={now[k]!r}" for k in changed)
                                  + "), or start a new run in another folder")
