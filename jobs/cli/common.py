"""What every command shares: the Typer app, the stderr console, common options and the settings they build."""

from __future__ import annotations

import json
import sys
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


def refuse(code: str, message: str, as_json: bool = False, status: int = 2) -> typer.Exit:
    """What a command that will not run says, the exit to raise: ``code: message`` on stderr (never a traceback) and,
    with ``--json``, one line ``{"error_code", "error"}`` on stdout for the script reading it. ``code``: the error's
    stable code (docs/architecture.md, "Error codes")."""
    console.print(f"[red]{code}:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    if as_json:
        sys.stdout.write(json.dumps({"error_code": code, "error": message}) + "\n")
        sys.stdout.flush()
    return typer.Exit(status)


def settings_from_cli(config: Optional[Path], *, as_json: bool = False, **overrides):
    """Settings from file < env < these flags; a bad value is ``invalid_configuration`` (``refuse``), not a trace."""
    from pydantic import ValidationError

    from pipeline.config import load_settings

    try:
        return load_settings(config, **overrides)
    except (ValidationError, OSError, ValueError) as exc:
        raise refuse("invalid_configuration", str(exc), as_json) from exc


def given_checkpoint(path: Optional[Path]) -> None:
    """A ``--checkpoint`` that names no file is a typo to name as such (``checkpoint_error``), not "no trained
    detector is installed", which is about the configured default."""
    if path is not None and not path.exists():
        from pipeline.errors import CheckpointError

        raise CheckpointError(f"checkpoint {path} does not exist")
