"""CLI commands ``scan``, ``query`` and ``report`` (registered on the main app by ``jobs.cli``).

Only typer is imported here: Ray, DuckDB, torch and pyarrow load inside the commands, so
``deepfakestream --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_OUTPUT = "./scan-output"
console = Console(stderr=True)

EndpointOpt = typer.Option(None, "--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
AnonOpt = typer.Option(False, "--anon", help="read S3 anonymously (public buckets)")
ProfileOpt = typer.Option(None, "--profile", help="AWS profile name")


def scan(
    source: str = typer.Argument(..., help="what to scan: s3://bucket/prefix, gs://…, a local folder or one file"),
    output: str = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="where the Parquet tables go (fsspec URI or folder)"),
    full: bool = typer.Option(False, "--full", help="rescan everything, even objects already scanned"),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="also rescan objects whose last row is ERROR"),
    ext: Optional[list[str]] = typer.Option(None, "--ext", help="file extensions to scan (repeatable; default: all media types)"),
    include: Optional[list[str]] = typer.Option(None, "--include", help="only paths matching this glob (repeatable)"),
    exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="skip paths matching this glob (repeatable)"),
    max_objects: Optional[int] = typer.Option(None, "--max-objects", min=1, help="scan at most this many new objects this run (sorted by URI, after skipping scanned ones)"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)"),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of the local Ray instance (default: all)"),
    decode_actors: Optional[int] = typer.Option(None, "--decode-actors", min=1, help="decode actors (default: from the cluster)"),
    detect_actors: Optional[int] = typer.Option(None, "--detect-actors", min=1, help="face-detection actors"),
    classify_actors: Optional[int] = typer.Option(None, "--classify-actors", min=1, help="classifier actors"),
    gpus_per_actor: Optional[float] = typer.Option(None, "--gpus-per-actor", min=0, help="GPU share of each model actor (default: share the cluster's GPUs; 0 on CPU-only clusters)"),
    torch_threads: Optional[int] = typer.Option(None, "--torch-threads", min=1, help="torch threads per model actor"),
    classify_batch: int = typer.Option(4, "--classify-batch", min=1, help="objects whose crops go through the classifier together"),
    decode_batch: int = typer.Option(1, "--decode-batch", min=1, help="objects per decode and per detect task"),
    commit_every: int = typer.Option(256, "--commit-every", min=1, help="commit a Parquet part every N objects"),
    commit_seconds: float = typer.Option(60.0, "--commit-seconds", min=0.1, help="… or every S seconds, whichever first"),
    max_task_retries: int = typer.Option(2, "--max-task-retries", min=0, help="retries of a batch whose worker died"),
    max_failed_batches: int = typer.Option(16, "--max-failed-batches", min=0, help="batches that may fail for good (their objects get ERROR rows) before the scan stops"),
    lost_retries: int = typer.Option(1, "--lost-retries", min=0, help="extra passes, with fresh actors, over objects whose batch failed on every retry (a lost node) before they get ERROR rows"),
    max_error_rate: float = typer.Option(0.5, "--max-error-rate", min=0.0, max=1.0, help="exit 4 (after committing everything) when more than this share of scanned objects got ERROR rows"),
    lease_seconds: float = typer.Option(120.0, "--lease-seconds", min=1.0, help="the output's lease lapses this long after its scan stops renewing it (a killed scan)"),
    stop_timeout: float = typer.Option(25.0, "--stop-timeout", min=1.0, help="after SIGTERM, exit (143) within this many seconds even if the final commit hangs"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/JSON/TOML settings file (also DFS_CONFIG)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="detector .safetensors (model card .json beside it)"),
    frames: Optional[int] = typer.Option(None, "--frames", help="frames sampled per video"),
    threshold: Optional[float] = typer.Option(None, help="override the model card's decision threshold"),
    as_json: bool = typer.Option(False, "--json", help="print the end summary as JSON on stdout"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar on stderr"),
    ray_progress: bool = typer.Option(False, "--ray-progress", help="also show Ray Data's per-operator progress bars"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Scan a bucket/folder with Ray Data into Parquet tables `videos` and `faces` (incremental, resumable)."""
    from jobs.cli import settings_from_cli
    from jobs.logs import setup_logging

    setup_logging(verbose)
    from jobs.scan import ExitCode, LeaseHeld, LeaseLost, ScanAborted, ScanOptions, Terminated, run_scan
    from pipeline.errors import DeepfakeStreamError
    from pipeline.media import MEDIA_EXTENSIONS

    settings = settings_from_cli(config, device=device, **{"classify.checkpoint": checkpoint,
                                 "decode.num_frames": frames, "classify.threshold": threshold})
    options = ScanOptions(
        source=source, output=output, full=full, retry_errors=retry_errors,
        extensions=tuple(ext) if ext else MEDIA_EXTENSIONS, include=tuple(include or ()), exclude=tuple(exclude or ()),
        max_objects=max_objects, endpoint_url=endpoint_url, anon=anon, profile=profile, ray_address=ray_address,
        num_cpus=num_cpus, decode_actors=decode_actors, detect_actors=detect_actors, classify_actors=classify_actors,
        gpus_per_actor=gpus_per_actor, torch_threads=torch_threads, classify_batch=classify_batch, decode_batch=decode_batch,
        commit_every=commit_every, commit_seconds=commit_seconds, max_task_retries=max_task_retries,
        max_failed_batches=max_failed_batches, lost_retries=lost_retries, max_error_rate=max_error_rate, lease_seconds=lease_seconds,
        stop_timeout=stop_timeout, progress=progress, ray_progress=ray_progress, verbose=verbose,
    )
    try:
        summary = run_scan(settings, options)
    except LeaseHeld as exc:
        console.print(f"[yellow]output busy:[/yellow] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(ExitCode.BUSY) from None
    except (ScanAborted, LeaseLost) as exc:
        console.print(f"[red]scan stopped:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(ExitCode.ABORTED) from None
    except DeepfakeStreamError as exc:
        console.print(f"[red]cannot scan:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(ExitCode.NOT_STARTED) from None
    except Terminated:
        console.print("[yellow]stopped (SIGTERM)[/yellow]: finished rows and the run record are committed; "
                      "run the same command again to resume", soft_wrap=True)
        raise typer.Exit(ExitCode.TERMINATED) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: committed results are kept; run the same command again to resume")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict()) + "\n")
    _print_scan_summary(summary)
    if summary.exit_code:
        console.print(f"[red]{summary.status}:[/red] {escape(summary.message or '')}", soft_wrap=True)
        raise typer.Exit(summary.exit_code)


def _print_scan_summary(summary) -> None:
    rate = f"{summary.videos_per_s:.2f} objects/s" if summary.scanned else "-"
    console.print(
        f"[bold]scan {summary.scan_id}[/bold] ({summary.model_version}): {summary.seen} objects seen, "
        f"{summary.skipped} skipped (already scanned), {summary.scanned} scanned, "
        f"[magenta]{summary.failed} failed[/magenta], {summary.no_face} without a face, "
        f"[red]{summary.fakes} fake[/red], [green]{summary.reals} real[/green]; {rate} "
        f"({summary.scan_s:.1f} s scanning, {summary.elapsed_s:.1f} s in all)")
    if summary.deferred:
        console.print(f"  {summary.deferred} new objects left for the next run (--max-objects)")
    if summary.lost:
        console.print(f"  {summary.lost} objects crashed their worker on every retry (rows with label ERROR)")
    for uri in summary.quarantined:
        console.print(f"  [yellow]quarantined[/yellow] unreadable part {uri}", soft_wrap=True)
    console.print(f"output: {summary.output}   (deepfakestream report {summary.output}); "
                  f"run record: _runs/{summary.scan_id}.json", soft_wrap=True)


def query(
    sql: str = typer.Argument(..., help="SQL over the views `videos`, `faces` (latest verdicts), `videos_history`, `faces_history` and `runs` (one row per scan)"),
    output: str = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="scan output to query (fsspec URI or folder)"),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Run DuckDB SQL over a scan's Parquet output and print the result."""
    from jobs.logs import setup_logging

    setup_logging(False)
    from jobs.query import QueryError, format_rows, run_query
    from jobs.scan import storage_options_for

    if fmt not in ("table", "csv", "json"):
        console.print(f"[red]unknown --format {fmt!r}[/red]: use table, csv or json")
        raise typer.Exit(2)
    try:
        columns, rows = run_query(output, sql, storage_options_for(output, endpoint_url, anon, profile))
    except QueryError as exc:
        console.print(f"[red]query failed:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    if fmt == "table":
        from rich.table import Table

        table = Table(*columns, box=None, padding=(0, 2), header_style="bold")
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        _stdout_console().print(table)
        console.print(f"{len(rows)} row(s)")
    else:
        sys.stdout.write(format_rows(columns, rows, fmt))


def report(
    output: str = typer.Argument(DEFAULT_OUTPUT, help="scan output (fsspec URI or folder)"),
    top: int = typer.Option(10, "--top", min=1, help="how many suspicious objects to list"),
    depth: Optional[int] = typer.Option(None, "--depth", min=0, help="group by the first N path levels (bucket counts as one) instead of the parent folder"),
    runs: int = typer.Option(10, "--runs", min=0, help="how many recent scans (run records) to list"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Summarise a scan's output: fake rate per prefix and day, the most suspicious objects, errors, recent runs."""
    from jobs.logs import setup_logging

    setup_logging(False)
    from jobs.query import QueryError, report as build_report
    from jobs.scan import storage_options_for

    try:
        data = build_report(output, storage_options_for(output, endpoint_url, anon, profile), top=top, depth=depth,
                            runs=runs)
    except QueryError as exc:
        console.print(f"[red]cannot report:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    _print_report(data)


def _stdout_console() -> Console:
    """Tables on stdout: the terminal's width, or wide enough for URIs when piped to a file."""
    return Console() if sys.stdout.isatty() else Console(width=240)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _print_report(data: dict) -> None:
    from rich.table import Table

    out = _stdout_console()
    out.print(f"[bold]{data['output']}[/bold]: {data['objects']} objects — [red]{data['fakes']} fake[/red], "
              f"[green]{data['reals']} real[/green], {data['no_face']} without a face, "
              f"[magenta]{data['errors']} errors[/magenta]; fake rate {_pct(data['fake_rate'])} of scored objects")
    if data["model_versions"] > 1:
        out.print(f"[yellow]note:[/yellow] verdicts come from {data['model_versions']} model versions")
    table = Table("prefix", "day", "objects", "fake", "real", "no face", "error", "fake rate",
                  title="fake rate per prefix and day", box=None, padding=(0, 2), header_style="bold")
    for row in data["by_prefix_day"]:
        table.add_row(row["prefix"], str(row["day"]), str(row["objects"]), str(row["fakes"]), str(row["reals"]),
                      str(row["no_face"]), str(row["errors"]), _pct(row["fake_rate"]))
    out.print(table)
    table = Table("uri", "score", "label", "faces", "people", "day", title="most suspicious", box=None,
                  padding=(0, 2), header_style="bold")
    for row in data["top_suspicious"]:
        table.add_row(row["uri"], f"{row['score']:.3f}", row["label"], str(row["faces"]), str(row["tracks"]), str(row["day"]))
    out.print(table)
    if data["top_errors"]:
        table = Table("error", "objects", title="errors", box=None, padding=(0, 2), header_style="bold")
        for row in data["top_errors"]:
            table.add_row(row["error"], str(row["objects"]))
        out.print(table)
    if data["runs"]:
        table = Table("scan", "status", "exit", "started", "listed", "skipped", "scanned", "failed", "quarantined",
                      title="recent runs (query the `runs` view for more)", box=None, padding=(0, 2), header_style="bold")
        for row in data["runs"]:
            colour = "green" if row["status"] == "succeeded" else "yellow" if row["status"] == "running" else "red"
            table.add_row(row["scan_id"], f"[{colour}]{row['status']}[/{colour}]", str(row["exit_code"] if row["exit_code"] is not None else "-"),
                          str(row["started_at"])[:19], str(row["listed"]), str(row["skipped"]), str(row["scanned"]),
                          str(row["failed"]), str(row["quarantined"]))
        out.print(table)
        out.print(f"last successful run ended {data['last_success'] or 'never'}")


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
    app.command("query")(query)
    app.command("report")(report)
