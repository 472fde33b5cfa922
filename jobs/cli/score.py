"""``score`` (the whole graph in-process, a verdict per input) and ``samples``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobs.cli.common import (AnonOpt, CheckpointOpt, ConfigOpt, DeviceOpt, EndpointOpt, FramesOpt, ProfileOpt,
                             given_checkpoint, refuse, settings_from_cli, storage_flags)
from jobs.cli.logs import setup_logging
from pipeline.result import shown_score


def _print_summary(result) -> None:
    colour = {"FAKE": "red", "REAL": "green", "NO_FACE": "yellow", "ERROR": "magenta"}[result.label]
    score = "-" if result.score is None else f"{shown_score(result.score, result.threshold, 3):.3f}"
    out = Console()
    out.print(f"[bold]{escape(result.uri)}[/bold]: [{colour}]{result.label}[/{colour}] score={score} "
              f"threshold={result.threshold} model={escape(result.model_version)}")
    if result.error:
        out.print(f"  error: {escape(result.error)}")
    if result.media:
        m = result.media
        out.print(f"  {m.type} {m.width}x{m.height}, {m.duration:.1f} s, {m.frames_sampled} frames sampled, "
                  f"{sum(f.faces for f in result.frames)} faces in {len(result.tracks)} track(s)")
    if result.tracks:
        table = Table("person (track)", "score", "frames seen", "in the verdict", box=None, padding=(0, 2))
        for track in result.tracks:
            table.add_row(str(track.track), f"{track.score:.3f}", str(track.frames_seen),
                          "yes" if track.counted else "no: seen too briefly")
        out.print(table)


def _shown(result):
    """``result`` as it may be printed: its URI and error without credentials (``pipeline.logsafe.redact_uri``)."""
    from pipeline.logsafe import redact_uri, redact_uris

    return result.model_copy(update={"uri": redact_uri(result.uri), "error": result.error and redact_uris(result.error)})


def score(
    paths: list[str] = typer.Argument(..., help="files or fsspec URIs (s3://, gs://, file paths)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per input, one per line"),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    frames: Optional[int] = FramesOpt,
    threshold: Optional[float] = typer.Option(None, help="override the model card's decision threshold"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Score videos/images in-process through the whole graph and print a verdict per input."""
    setup_logging(verbose, as_json)
    from pipeline.errors import DeepfakeStreamError
    from pipeline.graph import ScoringPipeline

    settings = settings_from_cli(config, as_json=as_json, device=device, **{
        "classify.checkpoint": checkpoint, "decode.num_frames": frames, "classify.threshold": threshold},
        **storage_flags(endpoint_url, anon, profile))  # S3 as `scan`, `query` and `report` reach it
    try:
        given_checkpoint(checkpoint)
        scorer = ScoringPipeline(settings)
    except DeepfakeStreamError as exc:
        raise refuse(exc.code, str(exc), as_json) from exc
    decode = scorer.graph.stages["decode"]
    for path in paths:
        # per input: S3's options would be another store's unknown arguments (an https:// URL beside an s3:// one)
        decode.storage_options = settings.scan.storage_options(path)
        try:
            result = scorer.score(path)
        except Exception as exc:  # noqa: BLE001 - one bad input gets its own ERROR row
            result = scorer.error(path, f"{type(exc).__name__}: {exc}")
        result = _shown(result)
        if as_json:
            sys.stdout.write(json.dumps(result.model_dump(mode="json")) + "\n")
            sys.stdout.flush()
        else:
            _print_summary(result)


def samples() -> None:
    """List the bundled sample media (made from scikit-image's public-domain photos)."""
    from pipeline.samples import sample_media

    for path in sample_media():
        print(path)


def register(app: typer.Typer) -> None:
    app.command()(score)
    app.command()(samples)
