"""``prepare``, ``train``, ``soup`` and ``evaluate``: the detector's datasets, training and measurement (docs/training.md).

The flags are what ``scripts/train_default.sh`` calls: keep them stable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from jobs.cli.common import CheckpointOpt, ConfigOpt, DeviceOpt, FramesOpt, console, settings_from_cli
from jobs.cli.logs import setup_logging
from jobs.training.config import TrainConfig
from pipeline.card import ModelSpec


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
    from pipeline.errors import DeepfakeStreamError

    settings = settings_from_cli(config, device=device)
    try:
        manifest = run_prepare(source, output, settings, crop_size=crop_size, frames_real=frames_real,
                               frames_fake=frames_fake, seed=seed, use_ray=use_ray, limit=limit)
    except (ValueError, FileNotFoundError, DeepfakeStreamError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"{manifest['faces']} face crops from {len(manifest['results'])} videos "
                  f"({len(manifest['failed'])} failed) → {output}")
    for name, info in manifest["splits"].items():
        console.print(f"  {name}: {info['videos']} videos, {len(info['groups'])} identity groups")


# `train` flags whose TrainConfig field has another name; every other flag is its field's name
TRAIN_FIELDS = {"output": "out_dir", "extra_dataset": "extra_datasets", "gpu": "use_gpu"}


def _train_option(field: str, *decls: str, help: str | None = None) -> typer.models.OptionInfo:
    """A `train` flag left out is not passed: TrainConfig owns its default, which help shows from there."""
    default = TrainConfig.model_fields[field].default
    if default is None or isinstance(default, bool):
        default = {None: "none", True: "on", False: "off"}[default]
    return typer.Option(None, *decls, help=help, show_default=str(default))


def train(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="folder made by `deepfakestream prepare`"),
    output: Path = typer.Option(Path("runs/train"), "--output", "-o"),
    extra_dataset: Optional[list[Path]] = typer.Option(None, "--extra-dataset", help="another prepared dataset: its train split is trained on, its val split validated on (repeatable)"),
    encoder: Optional[str] = _train_option("encoder", help="timm encoder: tf_efficientnet_lite0/1/2 (offline ImageNet weights from the train extra)"),
    input_mode: Optional[str] = _train_option("input_mode", help="rgb+srm, srm (noise residuals only) or rgb (no SRM filters)"),
    epochs: Optional[int] = _train_option("epochs"),
    batch_size: Optional[int] = _train_option("batch_size"),
    lr: Optional[float] = _train_option("lr"),
    real_fakes: Optional[bool] = _train_option("real_fakes", "--real-fakes/--no-real-fakes", help="also train on the train split's manipulated videos"),
    sbi: Optional[bool] = _train_option("sbi", "--sbi/--no-sbi", help="self-blended pseudo-fakes from the reals"),
    max_crops_per_video: Optional[int] = _train_option("max_crops_per_video"),
    max_steps_per_epoch: Optional[int] = _train_option("max_steps_per_epoch", help="cap on batches per epoch (each epoch draws a new random subset)"),
    codec_p: Optional[float] = _train_option("codec_p", help="share of training crops, any label, sent through an H.264 round trip"),
    capture_p: Optional[float] = _train_option("capture_p", help="share of training crops, any label, given a camera's grain or softness before any blend"),
    parts_p: Optional[float] = _train_option("parts_p", help="share of training crops, any label, with the eyes, nose or mouth blacked out"),
    cross_p: Optional[float] = _train_option("cross_p", help="share of pseudo-fakes blended from another person's aligned face instead of the face itself"),
    ema_decay: Optional[float] = _train_option("ema_decay", help="validate and ship an exponential moving average of the weights (0 = off; e.g. 0.998)"),
    paired: Optional[bool] = _train_option("paired", "--paired/--no-paired", help="each real crop and its pseudo-fake side by side in one batch"),
    layer_decay: Optional[float] = _train_option("layer_decay", help="encoder layers learn at lr x this**(layers above them); 0 = one lr"),
    init: Optional[Path] = _train_option("init", "--init", help="start from this trained detector (.safetensors + card) instead of ImageNet, e.g. to fine-tune the shipped one"),
    blend_map: Optional[float] = _train_option("blend_map", help="weight of an auxiliary loss predicting where each pseudo-fake was blended (0 = off)"),
    drop_path: Optional[float] = _train_option("drop_path", help="stochastic depth: the deepest encoder blocks skipped at this rate in training (0 = off)"),
    sam_rho: Optional[float] = _train_option("sam_rho", help="sharpness-aware minimisation radius (0 = off; SBI's 0.05): 2x a step's cost"),
    mesh_p: Optional[float] = _train_option("mesh_p", help="share of self-blends masked along the face's dense outline (MediaPipe face mesh) instead of MTCNN's 5 points"),
    local_p: Optional[float] = _train_option("local_p", help="share of self-blends confined to the mouth or the eyes (a reenactment's local seam); 0 = off"),
    label_smoothing: Optional[float] = _train_option("label_smoothing", help="binary targets moved this far toward 0.5 (0 -> eps/2, 1 -> 1 - eps/2); 0 = off"),
    source_balance: Optional[str] = _train_option("source_balance", help="sqrt: a source of n crops gets a share of each epoch growing with sqrt(n); none: in proportion to n"),
    patience: Optional[int] = _train_option("patience", help="early stopping: epochs without validation AUC gain"),
    seed: Optional[int] = _train_option("seed"),
    num_workers: Optional[int] = _train_option("num_workers", help="Ray Train data-parallel workers (0 = single process)"),
    gpu: Optional[bool] = _train_option("use_gpu", "--gpu", help="train on CUDA (mixed precision)"),
    threads: Optional[int] = _train_option("threads", help="torch CPU threads (0 = default)"),
    resume: Optional[bool] = _train_option("resume", "--resume/--no-resume", help="continue from OUTPUT/last.pt"),
    version: Optional[str] = _train_option("version", help="model version written to the card"),
    data_description: Optional[str] = _train_option("data_description", help="what the training data is and its terms (model card)"),
) -> None:
    """Train the detector; writes OUTPUT/best.safetensors + model card, last.pt, history.json."""
    setup_logging()
    from pydantic import ValidationError

    from jobs.training.train import train as run_train
    from pipeline.errors import DeepfakeStreamError

    given = {TRAIN_FIELDS.get(name, name): value for name, value in ctx.params.items() if value is not None}
    try:
        cfg = TrainConfig(**given)
        state = run_train(cfg)
    except (ValidationError, ValueError, FileNotFoundError, DeepfakeStreamError) as exc:
        code = getattr(exc, "code", None) or ("not_found" if isinstance(exc, FileNotFoundError) else "invalid")
        console.print(f"[red]{code}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
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
    from pipeline.errors import DeepfakeStreamError

    try:
        card = run_soup(checkpoints, output, version)
    except DeepfakeStreamError as exc:
        console.print(f"[red]{exc.code}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
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
    from pipeline.errors import DeepfakeStreamError

    if not fit and (target_fpr is not None or min_track_frames is not None):
        console.print("[red]--target-fpr and --min-track-frames shape the fit: use them with --fit[/red]")
        raise typer.Exit(2)
    settings = settings_from_cli(config, device=device, **{"classify.checkpoint": checkpoint, "decode.num_frames": frames})
    try:
        run_evaluate(source, split, settings, output, fit=fit, seed=seed, record=record, extra=extra,
                     target_fpr=DEFAULT_TARGET_FPR if target_fpr is None else target_fpr, min_track_frames=min_track_frames)
    except (DeepfakeStreamError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    print((output / f"report-{split}.md").read_text())


def register(app: typer.Typer) -> None:
    app.command()(prepare)
    app.command()(train)
    app.command()(soup)
    app.command()(evaluate)
