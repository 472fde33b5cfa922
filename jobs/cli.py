"""``deepfakestream`` command line: score, scan, query, report, prepare, train, evaluate, serve."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from jobs.logs import setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help="DeepfakeStream: find face-swap deepfakes in videos and images.")
console = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML/JSON/TOML settings file (also DFS_CONFIG)")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto")
CheckpointOpt = typer.Option(None, "--checkpoint", help="detector .safetensors (model card .json beside it)")
FramesOpt = typer.Option(None, "--frames", help="frames sampled per video")


def settings_from_cli(config: Optional[Path], **overrides):
    """Settings from file < env < these flags; a bad value is a clear error, not a trace."""
    from pydantic import ValidationError

    from pipeline.config import load_settings

    try:
        return load_settings(config, **overrides)
    except (ValidationError, OSError, ValueError) as exc:
        console.print(f"[red]invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from exc


def _print_summary(result) -> None:
    colour = {"FAKE": "red", "REAL": "green", "NO_FACE": "yellow", "ERROR": "magenta"}[result.label]
    score = "-" if result.score is None else f"{result.score:.3f}"
    out = Console()
    out.print(f"[bold]{result.uri}[/bold]: [{colour}]{result.label}[/{colour}] score={score} "
              f"threshold={result.threshold} model={result.model_version}")
    if result.error:
        out.print(f"  error: {result.error}")
    if result.media:
        m = result.media
        out.print(f"  {m.type} {m.width}x{m.height}, {m.duration:.1f} s, {m.frames_sampled} frames sampled, "
                  f"{sum(f.faces for f in result.frames)} faces in {len(result.tracks)} track(s)")
    if result.tracks:
        table = Table("person (track)", "score", "frames seen", box=None, padding=(0, 2))
        for track in result.tracks:
            table.add_row(str(track.track), f"{track.score:.3f}", str(track.frames_seen))
        out.print(table)


@app.command()
def score(
    paths: list[str] = typer.Argument(..., help="files or fsspec URIs (s3://, gs://, file paths)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per input, one per line"),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    frames: Optional[int] = FramesOpt,
    threshold: Optional[float] = typer.Option(None, help="override the model card's decision threshold"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Score videos/images in-process through the whole graph and print a verdict per input."""
    setup_logging(verbose)
    from pipeline.errors import DeepfakeStreamError
    from pipeline.graph import ScoringPipeline

    settings = settings_from_cli(config, device=device, **{"classify.checkpoint": checkpoint,
                                 "decode.num_frames": frames, "classify.threshold": threshold})
    try:
        scorer = ScoringPipeline(settings)
    except DeepfakeStreamError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    for path in paths:
        try:
            result = scorer.score(path)
        except Exception as exc:  # noqa: BLE001 - one bad input gets its own ERROR row
            result = scorer.error(path, f"{type(exc).__name__}: {exc}")
        if as_json:
            sys.stdout.write(json.dumps(result.model_dump(mode="json")) + "\n")
            sys.stdout.flush()
        else:
            _print_summary(result)


@app.command()
def samples() -> None:
    """List the bundled sample media (made from scikit-image's public-domain photos)."""
    from pipeline.samples import sample_media

    for path in sample_media():
        print(path)


# Further commands register here (scan/query/report: jobs.scan; serve: serve.app; prepare/train/evaluate).

from jobs import scan_cli  # noqa: E402 - scan/query/report; Ray, DuckDB and torch load inside the commands

scan_cli.register(app)


@app.command("serve")
def serve_command(
    host: Optional[str] = typer.Option(None, help="listen address (serve.host, default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="HTTP port (serve.port, default 8000)"),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    frames: Optional[int] = FramesOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the HTTP scoring API (Ray Serve) locally until Ctrl-C; OpenAPI docs at /docs."""
    setup_logging(verbose)
    settings = settings_from_cli(config, device=device, **{"serve.host": host, "serve.port": port,
                                 "classify.checkpoint": checkpoint, "decode.num_frames": frames})
    from serve.app import run  # Ray is imported only for this command

    run(settings)


@app.command()
def prepare(
    source: Path = typer.Argument(..., help="labels CSV, DFDC folder (metadata.json) or FaceForensics++ folder"),
    output: Path = typer.Option(Path("data-cache/crops"), "--output", "-o", help="crop dataset folder"),
    crop_size: int = typer.Option(160, help="crop side in pixels (= the model's input size)"),
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
    from jobs.prepare import prepare as run_prepare

    settings = settings_from_cli(config, device=device)
    try:
        manifest = run_prepare(source, output, settings, crop_size=crop_size, frames_real=frames_real,
                               frames_fake=frames_fake, seed=seed, use_ray=use_ray, limit=limit)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"{manifest['faces']} face crops from {len(manifest['results'])} videos "
                  f"({len(manifest['failed'])} failed) → {output}")
    for name, info in manifest["splits"].items():
        console.print(f"  {name}: {info['videos']} videos, {len(info['groups'])} identity groups")


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="folder made by `deepfakestream prepare`"),
    output: Path = typer.Option(Path("runs/train"), "--output", "-o"),
    extra_dataset: list[Path] = typer.Option([], "--extra-dataset", help="another prepared dataset: its train split is trained on, its val split validated on (repeatable)"),
    encoder: str = typer.Option("tf_efficientnet_lite0", help="timm encoder: tf_efficientnet_lite0/1/2 have offline ImageNet weights"),
    input_mode: str = typer.Option("rgb+srm", help="srm or rgb+srm"),
    epochs: int = typer.Option(8),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(3e-4),
    real_fakes: bool = typer.Option(False, help="also train on the train split's manipulated videos"),
    sbi: bool = typer.Option(True, help="self-blended pseudo-fakes from the reals"),
    max_crops_per_video: int = typer.Option(48),
    max_steps_per_epoch: Optional[int] = typer.Option(None, help="cap on batches per epoch (each epoch draws a new random subset)"),
    codec_p: float = typer.Option(0.5, help="share of training crops, any label, sent through an H.264 round trip"),
    patience: int = typer.Option(3, help="early stopping: epochs without validation AUC gain"),
    seed: int = typer.Option(0),
    num_workers: int = typer.Option(0, help="Ray Train data-parallel workers (0 = single process)"),
    gpu: bool = typer.Option(False, "--gpu", help="train on CUDA (mixed precision)"),
    threads: int = typer.Option(0, help="torch CPU threads (0 = default)"),
    resume: bool = typer.Option(False, help="continue from OUTPUT/last.pt"),
    version: str = typer.Option("dev", help="model version written to the card"),
    data_description: str = typer.Option("", help="what the training data is and its terms (model card)"),
) -> None:
    """Train the detector; writes OUTPUT/best.safetensors + model card, last.pt, history.json."""
    setup_logging()
    from pydantic import ValidationError

    from jobs.train import TrainConfig, train as run_train

    try:
        cfg = TrainConfig(dataset=dataset, out_dir=output, extra_datasets=extra_dataset, encoder=encoder, input_mode=input_mode, epochs=epochs, batch_size=batch_size,
                          lr=lr, real_fakes=real_fakes, sbi=sbi, max_crops_per_video=max_crops_per_video,
                          patience=patience, seed=seed, num_workers=num_workers, use_gpu=gpu, threads=threads,
                          resume=resume, version=version, max_steps_per_epoch=max_steps_per_epoch, codec_p=codec_p,
                          data_description=data_description)
        state = run_train(cfg)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"done: {json.dumps(state.get('history', [])[-1:] or state, default=str)[:400]}")
    console.print(f"best checkpoint: {output / 'best.safetensors'}")


@app.command()
def evaluate(
    source: Path = typer.Argument(..., help="labelled videos (CSV, DFDC or FaceForensics++ layout)"),
    split: str = typer.Option("test", help="train, val, test or all (identity-group split, same seed as prepare)"),
    output: Path = typer.Option(Path("runs/eval"), "--output", "-o"),
    fit: bool = typer.Option(False, "--fit", help="validation only: choose aggregation + threshold here and write them to the card"),
    record: bool = typer.Option(False, "--record", help="store this report's summary metrics in the model card"),
    extra: list[Path] = typer.Option([], "--extra", help="another labelled set (e.g. a real-only CSV with a split column) scored on the same split (repeatable)"),
    target_fpr: float = typer.Option(0.05, min=0.0001, max=0.5, help="--fit: false-positive rate allowed on each real source of the split"),
    min_track_frames: Optional[int] = typer.Option(None, min=1, help="--fit: tracks seen in fewer sampled frames give no verdict (default 4)"),
    seed: int = typer.Option(0),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    frames: Optional[int] = FramesOpt,
) -> None:
    """Score a labelled set through the full graph; write report-SPLIT.json/.md (F1, AUC, log loss...)."""
    setup_logging()
    from jobs.evaluate import evaluate as run_evaluate
    from pipeline.errors import DeepfakeStreamError

    settings = settings_from_cli(config, device=device, **{"classify.checkpoint": checkpoint, "decode.num_frames": frames})
    try:
        result = run_evaluate(source, split, settings, output, fit=fit, seed=seed, record=record, extra=extra,
                              target_fpr=target_fpr, min_track_frames=min_track_frames)
    except (DeepfakeStreamError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    print((output / f"report-{split}.md").read_text())


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
