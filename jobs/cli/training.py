"""``prepare``, ``train``, ``soup`` and ``evaluate``: the detector's datasets, training and measurement (docs/training.md).

The flags are what ``scripts/train_default.sh`` calls: keep them stable."""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from jobs.cli.common import (CheckpointOpt, ConfigOpt, DeviceOpt, FramesOpt, console, given_checkpoint, refuse,
                             setting_error, settings_from_cli)
from jobs.cli.logs import setup_logging
from jobs.training.config import TrainConfig
from pipeline.card import ModelSpec


def _code(exc: Exception, output: Path) -> str:
    """The stable code of a refusal: the error's own; else a bad setting or flag ``invalid_configuration``, other bad
    input ``invalid_input``; an OS error about the output folder (its parent a file, no permission) ``output_error``,
    a missing input ``not_found``, any other ``storage_error``."""
    from pydantic import ValidationError

    if getattr(exc, "code", None):
        return exc.code
    if isinstance(exc, ValidationError):
        return "invalid_configuration"
    if isinstance(exc, OSError):
        named = exc.filename and Path(os.path.abspath(exc.filename))
        target = Path(os.path.abspath(output))
        if named and (named == target or target in named.parents):
            return "output_error"
        return "not_found" if isinstance(exc, FileNotFoundError) else "storage_error"
    return "invalid_input"


@contextmanager
def _refusals(output: Path) -> Iterator[None]:
    """A refused run (bad input, settings or output: ``_code``) says ``code: message`` and exits 2, the traceback is
    for bugs; however the run ends, the folders of ``output`` it created and left empty are removed (the jobs make
    their output before they have checked everything), so a refusal leaves nothing behind."""
    from pydantic import ValidationError

    from pipeline.errors import DeepfakeStreamError

    created = _missing_folders(output)
    try:
        yield
    except (ValidationError, ValueError, OSError, DeepfakeStreamError) as exc:
        raise refuse(_code(exc, output), setting_error(exc) if isinstance(exc, ValidationError) else str(exc)) from exc
    finally:
        for folder in created:  # deepest first; rmdir refuses a folder that holds anything
            try:
                folder.rmdir()
            except OSError:
                break


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def prepare(
    source: Path = typer.Argument(..., help="labels CSV, DFDC folder (metadata.json) or FaceForensics++ folder"),
    output: Path = typer.Option(Path("data-cache/crops"), "--output", "-o", help="crop dataset folder"),
    crop_size: Optional[int] = typer.Option(None, min=32, show_default=f"detect.crop_size, else {ModelSpec.model_fields['input_size'].default}",
                                            help="crop side in pixels (= the model's input size); default: the settings' (DFS_DETECT__CROP_SIZE, --config), else a new model's"),
    frames_real: int = typer.Option(48, help="frames sampled per real video"),
    frames_fake: int = typer.Option(16, help="frames sampled per fake video"),
    seed: int = typer.Option(0, help="identity-group split seed"),
    use_ray: bool = typer.Option(False, "--ray", help="run on Ray Data (scales past one machine)"),
    limit: Optional[int] = typer.Option(None, help="only the first N videos (smoke runs)"),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Videos + labels → face-crop dataset (Parquet), split by identity group into train/val/test."""
    setup_logging()
    from jobs.training.prepare import prepare as run_prepare

    settings = settings_from_cli(config, device=device)
    with _refusals(output):
        manifest = run_prepare(source, output, settings, crop_size=crop_size, frames_real=frames_real,
                               frames_fake=frames_fake, seed=seed, use_ray=use_ray, limit=limit)
    console.print(f"{manifest['faces']} face crops from {len(manifest['results'])} videos "
                  f"({len(manifest['failed'])} failed) → {output}")
    for name, info in manifest["splits"].items():
        console.print(f"  {name}: {info['videos']} videos, {len(info['groups'])} identity groups")


# `train` flags whose TrainConfig field has another name; every other flag is its field's name
TRAIN_FIELDS = {"output": "out_dir", "extra_dataset": "extra_datasets", "gpu": "use_gpu"}


def _train_option(field: str, *decls: str) -> typer.models.OptionInfo:
    """A `train` flag left out is not passed: TrainConfig owns its default and its description, which help shows."""
    info = TrainConfig.model_fields[field]
    default = info.default
    if default is None or isinstance(default, bool):
        default = {None: "none", True: "on", False: "off"}[default]
    return typer.Option(None, *decls, help=info.description, show_default=str(default))


def train(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="folder made by `deepfakestream prepare`"),
    output: Path = typer.Option(Path("runs/train"), "--output", "-o"),
    extra_dataset: Optional[list[Path]] = typer.Option(None, "--extra-dataset", help="another prepared dataset: its train split is trained on, its val split validated on (repeatable)"),
    encoder: Optional[str] = _train_option("encoder"),
    input_mode: Optional[str] = _train_option("input_mode"),
    epochs: Optional[int] = _train_option("epochs"),
    batch_size: Optional[int] = _train_option("batch_size"),
    lr: Optional[float] = _train_option("lr"),
    real_fakes: Optional[bool] = _train_option("real_fakes", "--real-fakes/--no-real-fakes"),
    sbi: Optional[bool] = _train_option("sbi", "--sbi/--no-sbi"),
    max_crops_per_video: Optional[int] = _train_option("max_crops_per_video"),
    max_steps_per_epoch: Optional[int] = _train_option("max_steps_per_epoch"),
    codec_p: Optional[float] = _train_option("codec_p"),
    capture_p: Optional[float] = _train_option("capture_p"),
    parts_p: Optional[float] = _train_option("parts_p"),
    cross_p: Optional[float] = _train_option("cross_p"),
    ema_decay: Optional[float] = _train_option("ema_decay"),
    paired: Optional[bool] = _train_option("paired", "--paired/--no-paired"),
    layer_decay: Optional[float] = _train_option("layer_decay"),
    init: Optional[Path] = _train_option("init", "--init"),
    blend_map: Optional[float] = _train_option("blend_map"),
    drop_path: Optional[float] = _train_option("drop_path"),
    sam_rho: Optional[float] = _train_option("sam_rho"),
    mesh_p: Optional[float] = _train_option("mesh_p"),
    local_p: Optional[float] = _train_option("local_p"),
    label_smoothing: Optional[float] = _train_option("label_smoothing"),
    source_balance: Optional[str] = _train_option("source_balance"),
    patience: Optional[int] = _train_option("patience"),
    seed: Optional[int] = _train_option("seed"),
    num_workers: Optional[int] = _train_option("num_workers"),
    gpu: Optional[bool] = _train_option("use_gpu", "--gpu"),
    threads: Optional[int] = _train_option("threads"),
    resume: Optional[bool] = _train_option("resume", "--resume/--no-resume"),
    overwrite: Optional[bool] = _train_option("overwrite", "--overwrite"),
    version: Optional[str] = _train_option("version"),
    data_description: Optional[str] = _train_option("data_description"),
) -> None:
    """Train the detector; writes OUTPUT/best.safetensors + model card, last.pt, history.json."""
    setup_logging()
    given = {TRAIN_FIELDS.get(name, name): value for name, value in ctx.params.items() if value is not None}
    with _refusals(output):
        # settings and datasets are checked before the training stack is imported (~7 s on 2 cores), so a typo is
        # said at once
        config = TrainConfig(**given)
        for folder in (config.dataset, *config.extra_datasets):
            if not (folder / "manifest.json").is_file():
                raise FileNotFoundError(errno.ENOENT, "not a prepared dataset (no manifest.json; `deepfakestream "
                                        "prepare` makes one)", str(folder))
        from jobs.training.train import train as run_train

        state = run_train(config)
    console.print(f"done: {json.dumps(state.get('history', [])[-1:] or state, default=str)[:400]}")
    console.print(f"best checkpoint: {output / 'best.safetensors'}")


def soup(
    checkpoints: list[Path] = typer.Argument(..., help="two or more trained checkpoints of one architecture"),
    output: Path = typer.Option(..., "--output", "-o", help="the averaged checkpoint (.safetensors; card beside it)"),
    version: str = typer.Option(..., help="model version written to the card"),
) -> None:
    """Average checkpoints' weights into one detector; fit its operating point next (`evaluate --fit`)."""
    setup_logging()
    from jobs.training.soup import soup as run_soup

    with _refusals(output):
        for path in checkpoints:
            given_checkpoint(path)
        card = run_soup(checkpoints, output, version)
    console.print(f"{card.version}: average of {', '.join(i['version'] for i in card.training['ingredients'])} → {output}")


def evaluate(
    source: Path = typer.Argument(..., help="labelled videos (CSV, DFDC or FaceForensics++ layout)"),
    split: str = typer.Option("test", help="train, val, test or all (identity-group split, same seed as prepare)"),
    output: Path = typer.Option(Path("runs/eval"), "--output", "-o"),
    fit: bool = typer.Option(False, "--fit", help="validation only: choose aggregation + threshold here and write them to the card"),
    record: bool = typer.Option(False, "--record", help="store this report's summary metrics in the model card"),
    extra: list[Path] = typer.Option([], "--extra", help="another labelled set (e.g. a real-only CSV with a split column) scored on the same split (repeatable)"),
    target_fpr: Optional[float] = typer.Option(None, min=0.0001, max=0.5, show_default="0.05", help="--fit: false-positive rate allowed on each real source of the split"),
    min_track_frames: Optional[int] = typer.Option(None, min=1, help="--fit: tracks seen in fewer sampled frames give no verdict (default 4)"),
    seed: int = typer.Option(0),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    frames: Optional[int] = FramesOpt,
) -> None:
    """Score a labelled set through the full graph; write report-SPLIT.json/.md (F1, AUC, log loss...)."""
    setup_logging()
    from jobs.training.evaluate import evaluate as run_evaluate
    from jobs.training.fit import DEFAULT_TARGET_FPR

    if not fit and (target_fpr is not None or min_track_frames is not None):
        raise refuse("invalid_configuration", "--target-fpr and --min-track-frames shape the fit: use them with --fit")
    settings = settings_from_cli(config, device=device, **{"classify.checkpoint": checkpoint, "decode.num_frames": frames})
    with _refusals(output):
        given_checkpoint(checkpoint)
        run_evaluate(source, split, settings, output, fit=fit, seed=seed, record=record, extra=extra,
                     target_fpr=DEFAULT_TARGET_FPR if target_fpr is None else target_fpr, min_track_frames=min_track_frames)
    print((output / f"report-{split}.md").read_text())


def register(app: typer.Typer) -> None:
    app.command()(prepare)
    app.command()(train)
    app.command()(soup)
    app.command()(evaluate)
