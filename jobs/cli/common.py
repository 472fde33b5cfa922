"""What every command shares: the Typer app, the stderr console, common options and the settings they build."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

JSON_FLAG = "--json"


@contextmanager
def _usage_as_json(as_json: bool) -> Iterator[None]:
    """Under ``--json`` a usage error (a word where a number goes, an unknown flag, a missing argument) is a refusal
    like any other, so the script reading stdout gets its one line; without, typer's usage message as ever."""
    try:
        yield
    except typer.TyperException as exc:  # typer vendors click and exports no UsageError: its exit status 2 marks one
        if not as_json or getattr(exc, "exit_code", None) != 2:
            raise
        raise refuse("invalid_configuration", exc.format_message(), as_json=True) from exc


def tolerant_streams() -> None:
    """stdout and stderr write what their encoding cannot hold (日本 under LC_ALL=de_DE.ISO-8859-1) as escapes
    (``\\u65e5``), as Python's stderr does by default, instead of raising UnicodeEncodeError part-way through a table,
    a report or a CSV export."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (OSError, ValueError):  # closed, or not a real TextIOWrapper: left as it is
                pass


class _App(TyperGroup):
    """The command group: a usage error with ``--json`` among the arguments answers as ``refuse`` does. Here, not
    in a ``main()``, so the console script (``jobs.cli:app``), ``python -m jobs.cli`` and CliRunner all get it."""

    def make_context(self, info_name, args, parent=None, **extra):
        tolerant_streams()
        as_json = JSON_FLAG in args  # before parsing, which consumes ``args``
        with _usage_as_json(as_json):
            ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[JSON_FLAG] = as_json
        return ctx

    def invoke(self, ctx):  # the subcommand's own arguments are parsed in here
        with _usage_as_json(ctx.meta.get(JSON_FLAG, False)):
            return super().invoke(ctx)


app = typer.Typer(cls=_App, add_completion=False, no_args_is_help=True,
                  help="DeepfakeStream: find face-swap deepfakes in videos and images.")


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


def storage_flags(endpoint_url: Optional[str], anon: bool, profile: Optional[str]) -> dict:
    """The S3 flags as settings overrides: every command reads storage from the ``scan`` section
    (``ScanConfig.storage_options``), so one ``DFS_SCAN__ENDPOINT_URL`` or config file serves them all."""
    return {"scan.endpoint_url": endpoint_url, "scan.anon": anon or None, "scan.profile": profile}


def refuse(code: str, message: str, as_json: bool = False, status: int = 2) -> typer.Exit:
    """What a command that will not run says, the exit to raise: ``code: message`` on stderr (never a traceback) and,
    with ``--json``, one line ``{"error_code", "error"}`` on stdout for the script reading it. ``code``: the error's
    stable code (docs/architecture.md, "Error codes")."""
    console.print(f"[red]{code}:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    if as_json:
        sys.stdout.write(json.dumps({"error_code": code, "error": message}) + "\n")
        sys.stdout.flush()
    return typer.Exit(status)


def checked(model, as_json: bool = False, **values):
    """``model(**values)``: flags whose bounds live in a pydantic model, not in typer's ``min=``, so a value out of
    range is ``invalid_configuration`` (``refuse``, with ``--json``'s line) as a bad setting is."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as exc:  # each error named by its flag, as typer would: "--top: … (got 0)"
        raise refuse("invalid_configuration", _one_line(exc, lambda loc: "--" + loc.replace("_", "-")), as_json) from exc


def _one_line(exc, name=lambda loc: loc) -> str:
    """A ValidationError as one line, each error ``name: message (got value)``; pydantic's own text spans lines, so
    a log alert or scheduler reading the last line of stderr missed the code."""
    return "; ".join(f"{name('.'.join(map(str, e['loc'])))}: {e['msg']} (got {e['input']!r})" for e in exc.errors())


def setting_error(exc: BaseException) -> str:
    """What ``invalid_configuration`` says of a settings failure, in one line (``settings_from_cli``)."""
    from pydantic import ValidationError

    return _one_line(exc) if isinstance(exc, ValidationError) else " ".join(str(exc).split())


def settings_from_cli(config: Optional[Path], *, as_json: bool = False, **overrides):
    """Settings from file < env < these flags; a bad value is ``invalid_configuration`` (``refuse``), not a trace."""
    from pydantic import ValidationError

    from pipeline.config import load_settings

    try:
        return load_settings(config, **overrides)
    except (ValidationError, OSError, ValueError) as exc:
        raise refuse("invalid_configuration", setting_error(exc), as_json) from exc


@contextmanager
def stdout_to_stderr(on: bool = True) -> Iterator[None]:
    """File descriptor 1 onto stderr while ``on``: under ``--json`` stdout holds one JSON line, and Ray prints its
    raylet's error messages (a worker killed, a task failed) on stdout whatever ``log_to_driver`` says."""
    saved = None
    if on and sys.stdout is not None:  # None: started with fd 1 closed, nothing to keep clean
        try:
            sys.stdout.flush()
            saved = os.dup(1)
            os.dup2(2, 1)
        except (OSError, ValueError):  # fd 1 or 2 closed, stdout a closed file: run as it is
            if saved is not None:
                os.close(saved)
            saved = None
    if saved is None:
        yield
        return
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 1)
        os.close(saved)


def given_checkpoint(path: Optional[Path]) -> None:
    """A ``--checkpoint`` that names no file is a typo to name as such (``checkpoint_error``), not "no trained
    detector is installed", which is about the configured default."""
    if path is not None and not path.exists():
        from pipeline.errors import CheckpointError

        raise CheckpointError(f"checkpoint {path} does not exist")
