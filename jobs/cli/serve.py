"""``serve``: the HTTP scoring API on a local Ray Serve until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from jobs.cli.common import CheckpointOpt, ConfigOpt, DeviceOpt, FramesOpt, refuse, settings_from_cli
from jobs.cli.logs import setup_logging
from serve.config import ServeConfig


def serve_command(
    host: Optional[str] = typer.Option(None, help="listen address (serve.host)", show_default=ServeConfig.model_fields["host"].default),
    port: Optional[int] = typer.Option(None, help="HTTP port (serve.port)", show_default=str(ServeConfig.model_fields["port"].default)),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Prometheus /metrics port (serve.metrics_port; default: Ray picks one)"),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    frames: Optional[int] = FramesOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the HTTP scoring API (Ray Serve) locally until Ctrl-C; its OpenAPI contract at /openapi.json."""
    setup_logging(verbose)
    settings = settings_from_cli(config, device=device, **{"serve.host": host, "serve.port": port, "serve.metrics_port": metrics_port,
                                 "classify.checkpoint": checkpoint, "decode.num_frames": frames})
    from serve.app import ServeStartError, run  # Ray is imported only for this command

    try:
        run(settings)
    except ServeStartError as exc:  # port in use, Ray or the deploy failed: `code: message`, exit 2 (-v: the trace)
        raise refuse(exc.code, str(exc)) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
