"""A run's folder: ``--resume`` only with the settings the run was started with (what may differ, paths and
threads, is listed) and on crops of its size and margin, from a ``last.pt`` that reads whole; a new run never over
another's checkpoints unless told."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from jobs.training.config import TrainConfig
from pipeline.card import read_card
from pipeline.errors import CheckpointError, DeepfakeStreamError, one_line


class ResumeMismatchError(DeepfakeStreamError, ValueError):
    """``--resume`` with settings that differ from the run's own: the saved optimizer and schedule would carry
    the old ones on silently (or fail deep in torch), so the run must be resumed as it was started."""

    code = "resume_mismatch"


class RunExistsError(DeepfakeStreamError, ValueError):
    """A new run into a folder that holds another run's checkpoints: epoch by epoch it would replace them."""

    code = "run_exists"


# may differ on resume: where the data and the run live, and how this machine runs it
RESUME_FREE = {"dataset", "out_dir", "extra_datasets", "resume", "overwrite", "threads", "num_workers", "use_gpu",
               "version", "data_description", "patience"}
# a run's checkpoints, and everything it writes into its folder
CHECKPOINTS = ("last.pt", "best.safetensors")
RUN_FILES = (*CHECKPOINTS, "best.json", "history.json")


def claim_out_dir(config: TrainConfig) -> Callable[[], None]:
    """Before any crop is read: a run that does not continue ``last.pt`` is a new run, refused over another run's
    checkpoints unless ``overwrite``. Returns what makes the folder the new run's: removing the old run's files (so
    it never holds two runs' parts), or nothing. ``fit`` calls it once its inputs passed their checks, just before the
    first epoch: a run refused for its data (one class in val, no train crops, a missing dataset) leaves the old run
    whole."""
    out = Path(config.out_dir)
    if config.resume and (out / "last.pt").exists():
        return _keep
    found = [name for name in CHECKPOINTS if (out / name).exists()]
    if not found:
        return _keep
    if not config.overwrite:
        why = "--resume found no last.pt to continue, so" if config.resume else "without --resume"
        raise RunExistsError(f"{out} holds another run's {' and '.join(found)}; {why} this would be a new run replacing "
                             "them: --resume to continue that run, another --output, or --overwrite to replace it")

    def remove_old_run() -> None:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)

    return remove_old_run


def _keep() -> None:
    """Nothing of another run to remove."""


def read_last(path: Path) -> dict:
    """``last.pt`` as saved by ``train.fit``, or a ``CheckpointError`` saying why it cannot be resumed."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - zip, pickle and torch each raise their own on a damaged file
        raise CheckpointError(f"{path} cannot be read ({one_line(exc)}), so the run cannot be resumed: start it again "
                              "with --overwrite instead of --resume, or into another --output") from exc
    if not isinstance(saved, dict) or not {"model", "optimizer", "scheduler", "state"} <= saved.keys():
        raise CheckpointError(f"{path} is not a training run's last.pt (no model, optimizer, scheduler and state)")
    return saved


_UNKNOWN = object()


def _default(name: str) -> Any:
    """A TrainConfig field's default as JSON would hold it; _UNKNOWN when it has none plain enough to compare."""
    value = TrainConfig.model_fields[name].get_default(call_default_factory=True)
    return value if value is None or isinstance(value, (bool, int, float, str)) else _UNKNOWN


def check_resume(last: dict, config: TrainConfig, path: Path, geometry: dict) -> None:
    """``last`` (``read_last``'s) may be continued by ``config`` on crops of ``geometry`` (crop size and margin: the
    datasets' ``manifest.json``; the dataset paths may change, the crops' size and margin may not)."""
    _same_geometry(last, path, geometry)
    saved = last.get("config")
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


def _same_geometry(last: dict, path: Path, geometry: dict) -> None:
    """Refuse crops of another size or margin than the run's: a run would go on training one network on two.
    A ``last.pt`` saved before it recorded its crops' geometry is held to its run's card (``best.safetensors``
    beside it, written from epoch 1 on), when there is one."""
    was = last.get("crop_geometry")
    best = path.parent / "best.safetensors"
    if was is None and best.exists():
        spec = read_card(best).architecture
        was = {"crop_size": spec.input_size, "margin": spec.crop_margin}
    if was is not None and was != geometry:
        raise ResumeMismatchError(f"{path} was trained on crops of crop_size={was['crop_size']}, margin={was['margin']}; "
                                  f"the prepared datasets here are crop_size={geometry['crop_size']}, margin={geometry['margin']}: "
                                  "resume on datasets prepared as the run's were, or start a new run in another folder")
