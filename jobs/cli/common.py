"""What every command shares: the Typer app, the stderr console, common options and the settings they build."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True, help="DeepfakeStream: find face-swap deepfakes in videos and images.")


def _version(value: bool) -> None:
    if value:
        from jobs.report.version import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="print the package, detector and library versions and exit")) -> None:
    """DeepfakeStream: find face-swap deepfakes in videos and images."""
console = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML/JSON/TOML settings file (also DFS_CONFIG)")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto")
CheckpointOpt = typer.Option(None, "--checkpoint", help="detector .safetensors (model card .json beside it)")
FramesOpt = typer.Option(None, "--frames", help="frames sampled per video")
EndpointOpt = typer.Option(None, "--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
AnonOpt = typer.Option(False, "--anon", help="read S3 anonymously (public buckets)")
ProfileOpt = typer.Option(None, "--profile", help="AWS profile name")


def settings_from_cli(config: Optional[Path], **overrides):
    """Settings from file < env < these flags; a bad value is a clear error, not a trace."""
    from pydantic import ValidationError

    from pipeline.config import load_settings

    try:
        return load_settings(config, **overrides)
    except (ValidationError, OSError, ValueError) as exc:
        console.print(f"[red]invalid configuration:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
