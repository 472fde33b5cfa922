"""``scan``: a bucket or folder through the graph on Ray Data into Parquet (docs/scan.md).

Only typer is imported here: Ray, torch and pyarrow load inside the command, so ``--help`` stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape

from jobs.cli.common import (AnonOpt, CheckpointOpt, ConfigOpt, DeviceOpt, EndpointOpt, FramesOpt, ProfileOpt, console,
                             given_checkpoint, refuse, setting_error, settings_from_cli, stdout_to_stderr)
from jobs.cli.logs import setup_logging
from jobs.scan.config import DEFAULT_OUTPUT, ScanConfig


def _default(name: str) -> str:
    """A flag's default as help shows it: ScanConfig's own, so the two cannot drift (flags left out pass None)."""
    default = ScanConfig.model_fields[name].default
    if isinstance(default, bool):  # a --x/--no-x pair shows the side that is on
        return ("" if default else "no-") + name.replace("_", "-")
    return str(default)


# The flags carry no bounds of their own (typer's min/max): ScanConfig's fields do, so an out-of-range value is
# refused as any bad setting is, with --json's invalid_configuration line.
def scan(
    source: str = typer.Argument(..., help="what to scan: s3://bucket/prefix, gs://…, a local folder or one file"),
    output: Optional[str] = typer.Option(None, "--output", "-o", show_default=DEFAULT_OUTPUT, help="where the Parquet tables go (fsspec URI or folder)"),
    full: bool = typer.Option(False, "--full", help="rescan everything, even objects already scanned"),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="also rescan objects whose last row is ERROR"),
    ext: Optional[list[str]] = typer.Option(None, "--ext", help="file extensions to scan (repeatable; default: all media types)"),
    include: Optional[list[str]] = typer.Option(None, "--include", help="only paths matching this glob (repeatable)"),
    exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="skip paths matching this glob (repeatable)"),
    max_objects: Optional[int] = typer.Option(None, "--max-objects", help="scan at most this many objects this run, after skipping scanned ones: new first, then changed, then rescans (--retry-errors, --full) oldest first"),
    max_deleted_share: Optional[float] = typer.Option(None, "--max-deleted-share", show_default=_default("max_deleted_share"), help="the largest share of the source's current objects one scan marks DELETED (gone from the source); past it none are marked, in case the listing lost them (1: no limit)"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)"),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs of the local Ray instance (default: all)"),
    num_gpus: Optional[int] = typer.Option(None, "--num-gpus", help="GPUs of the local Ray instance (default: detected)"),
    plan: Optional[Literal["auto", "fused", "split"]] = typer.Option(None, "--plan", show_default=_default("plan"),
                                       help="fused: one actor per CPU runs the whole graph; split: CPU decode actors → (GPU) model actors; auto: split when the cluster has a GPU"),
    fused_actors: Optional[int] = typer.Option(None, "--fused-actors", help="actors of the fused plan (default: one per CPU)"),
    shrink_frames: Optional[bool] = typer.Option(None, "--shrink-frames/--no-shrink-frames", show_default=_default("shrink_frames"), help="split plan: decode sends frames at the detector's working size, less traffic but softer crops on large sources (default: full frames)"),
    decode_actors: Optional[int] = typer.Option(None, "--decode-actors", help="decode actors (default: from the cluster)"),
    detect_actors: Optional[int] = typer.Option(None, "--detect-actors", help="face-detection actors"),
    classify_actors: Optional[int] = typer.Option(None, "--classify-actors", help="classifier actors"),
    gpus_per_actor: Optional[float] = typer.Option(None, "--gpus-per-actor", help="GPU share of each model actor (default: share the cluster's GPUs; 0 on CPU-only clusters)"),
    torch_threads: Optional[int] = typer.Option(None, "--torch-threads", help="torch threads per model actor"),
    classify_batch: Optional[int] = typer.Option(None, "--classify-batch", show_default=_default("classify_batch"), help="split plan only: objects whose crops go through the classifier together (the fused plan uses --decode-batch)"),
    decode_batch: Optional[int] = typer.Option(None, "--decode-batch", show_default=_default("decode_batch"), help="objects per decode and per detect task"),
    commit_every: Optional[int] = typer.Option(None, "--commit-every", show_default=_default("commit_every"), help="commit a Parquet part every N objects"),
    commit_seconds: Optional[float] = typer.Option(None, "--commit-seconds", show_default=_default("commit_seconds"), help="… or every S seconds, whichever first"),
    max_task_retries: Optional[int] = typer.Option(None, "--max-task-retries", show_default=_default("max_task_retries"), help="retries of a batch whose worker died"),
    max_failed_batches: Optional[int] = typer.Option(None, "--max-failed-batches", show_default=_default("max_failed_batches"), help="batches that may fail for good (their objects get ERROR rows) before the scan stops"),
    lost_retries: Optional[int] = typer.Option(None, "--lost-retries", show_default=_default("lost_retries"), help="extra passes, with fresh actors, over objects whose batch failed on every retry (a lost node) before they get ERROR rows"),
    max_error_rate: Optional[float] = typer.Option(None, "--max-error-rate", show_default=_default("max_error_rate"), help="exit 4 (after committing everything) when more than this share of scanned objects got ERROR rows"),
    lease_seconds: Optional[float] = typer.Option(None, "--lease-seconds", show_default=_default("lease_seconds"), help="the output's lease lapses this long after its scan stops renewing it (a killed scan)"),
    actor_start_timeout: Optional[int] = typer.Option(None, "--actor-start-timeout", show_default=_default("actor_start_timeout"), help="seconds the actor pools may take to start before the scan is cluster_busy (others' jobs holding the cluster)"),
    stop_timeout: Optional[float] = typer.Option(None, "--stop-timeout", show_default=_default("stop_timeout"), help="after SIGTERM, exit (143) within this many seconds even if the final commit hangs"),
    thumbnails: Optional[int] = typer.Option(None, "--thumbnails", show_default=_default("thumbnails"), help="face thumbnails kept per object for the report (its top-scoring faces; 0 = off)"),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    frames: Optional[int] = FramesOpt,
    threshold: Optional[float] = typer.Option(None, help="override the model card's decision threshold"),
    as_json: bool = typer.Option(False, "--json", help="print the end summary as JSON on stdout (on every exit)"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", show_default=_default("progress"), help="progress bar on stderr"),
    ray_progress: bool = typer.Option(False, "--ray-progress", help="also show Ray Data's per-operator progress bars"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Scan a bucket/folder with Ray Data into Parquet tables `videos` and `faces` (incremental, resumable)."""
    from jobs.scan.driver import run_scan
    from jobs.scan.errors import CRASHED, ScanAborted
    from jobs.scan.exit_codes import ExitCode
    from jobs.scan.lease import LeaseHeld, LeaseLost
    from jobs.scan.output import OutputError
    from jobs.scan.stop import Terminated
    from pipeline.errors import DeepfakeStreamError, one_line
    from pipeline.logsafe import redact_uris

    # flags override the `scan:` section of the file and DFS_SCAN__* only when given (on/off flags when on)
    flags = dict(source=source, output=output, full=full or None, retry_errors=retry_errors or None, extensions=ext, include=include,
                 exclude=exclude, max_objects=max_objects, max_deleted_share=max_deleted_share, endpoint_url=endpoint_url, anon=anon or None, profile=profile,
                 ray_address=ray_address, num_cpus=num_cpus, num_gpus=num_gpus, plan=plan, fused_actors=fused_actors, shrink_frames=shrink_frames, decode_actors=decode_actors, detect_actors=detect_actors,
                 classify_actors=classify_actors, gpus_per_actor=gpus_per_actor, torch_threads=torch_threads,
                 classify_batch=classify_batch, decode_batch=decode_batch, commit_every=commit_every,
                 commit_seconds=commit_seconds, max_task_retries=max_task_retries, max_failed_batches=max_failed_batches,
                 lost_retries=lost_retries, max_error_rate=max_error_rate, lease_seconds=lease_seconds,
                 actor_start_timeout=actor_start_timeout, stop_timeout=stop_timeout, thumbnails=thumbnails, progress=progress, ray_progress=ray_progress or None, verbose=verbose or None)
    ended: list = []  # the summary, however the scan ends (none when it stopped before opening the output)
    failure = _failure_json(as_json, ended, source, output)
    try:
        setup_logging(verbose)  # its refusal's JSON line is the scan's summary line (failure)
        settings = settings_from_cli(config, device=device, **{"classify.checkpoint": checkpoint, "decode.num_frames": frames,
                                     "classify.threshold": threshold},
                                     **{f"scan.{k}": v for k, v in flags.items() if v is not None and v != []})
    except typer.Exit as exc:  # the settings' one line is printed; --json still gets its summary
        failure(exc.__cause__ or exc, "not_started", ExitCode.NOT_STARTED, "invalid_configuration",
                exc.__cause__ and setting_error(exc.__cause__))
        raise
    failure = _failure_json(as_json, ended, source, settings.scan.output)
    try:  # each failure: its summary under --json, then `code: message` on stderr as every command says it (refuse)
        given_checkpoint(checkpoint)
        with stdout_to_stderr(as_json):  # while Ray runs: its messages are no JSON
            summary = run_scan(settings, on_end=ended.append,
                               on_plan=lambda chosen: console.print(escape(chosen.line()), soft_wrap=True, highlight=False))
    except LeaseHeld as exc:
        failure(exc, "busy", ExitCode.BUSY)
        raise refuse(exc.code, redact_uris(str(exc)), status=ExitCode.BUSY) from None
    except (ScanAborted, LeaseLost) as exc:
        failure(exc, "aborted", ExitCode.ABORTED)
        raise refuse(exc.code, redact_uris(str(exc)), status=ExitCode.ABORTED) from None
    except OutputError as exc:
        failure(exc, "not_started", ExitCode.NOT_STARTED)
        raise refuse(exc.code, _then(redact_uris(str(exc)), ended), status=ExitCode.NOT_STARTED) from None
    except DeepfakeStreamError as exc:
        failure(exc, "not_started", ExitCode.NOT_STARTED)
        raise refuse(exc.code, redact_uris(str(exc)), status=ExitCode.NOT_STARTED) from None
    except Terminated as exc:
        failure(exc, "terminated", ExitCode.TERMINATED, "terminated")
        raise refuse("terminated", "stopped (SIGTERM), finished rows and the run record are committed; run the same "
                     "command again to resume", status=ExitCode.TERMINATED) from None
    except KeyboardInterrupt as exc:
        failure(exc, "interrupted", ExitCode.INTERRUPTED, "interrupted")
        raise refuse("interrupted", "committed results are kept; run the same command again to resume",
                     status=ExitCode.INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 - a fault of ours or of the storage: one line; the trace in the debug log
        import logging

        logging.getLogger("deepfakestream.scan").debug("the scan crashed", exc_info=True)
        failure(exc, "aborted", ExitCode.ABORTED)
        raise refuse(CRASHED, f"{_then(redact_uris(one_line(exc)), ended)}; run the same command again to resume "
                     "(-v shows the trace)", status=ExitCode.ABORTED) from None
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict()) + "\n")
    _print_scan_summary(summary)
    if summary.exit_code:
        raise refuse(summary.error_code or summary.status, summary.message or "", status=summary.exit_code)


def _then(message: str, ended: list) -> str:
    """``message`` and what the failed scan left behind, as far as it knows: its committed parts and run record when
    it committed some, a run record that could not be written always (no summary: it wrote nothing)."""
    message = message.rstrip(". ")  # one period between sentences, however the error's message ends
    if not ended:
        return message
    summary = ended[-1]
    record = f"_runs/{summary.scan_id}.json"
    if summary.parts:
        return message + (f". Committed results and the run record {record} are kept" if summary.record_written
                          else f". Committed results are kept; the run record {record} could not be written")
    return message + ("" if summary.record_written else f". The run record {record} could not be written")


def _failure_json(as_json: bool, ended: list, source: str, output: str | None):
    """``failure(exc, status, exit_code[, error_code])``: with ``--json``, print the end summary of a scan that
    failed, one line on stdout: the run's own once it has one, else status, exit code, error code, message."""
    def failure(exc: BaseException, status: str, code: int, error_code: str | None = None,
                said: str | None = None) -> None:
        if not as_json:
            return
        from jobs.scan.errors import CRASHED
        from pipeline.errors import DeepfakeStreamError
        from pipeline.logsafe import redact_uri, redact_uris

        data = ended[-1].to_dict() if ended else {
            "source": redact_uri(source), "output": output and redact_uri(output), "status": status, "exit_code": int(code),
            "error_code": error_code or (exc.code if isinstance(exc, DeepfakeStreamError) else CRASHED),
            "message": " ".join(redact_uris(said or str(exc)).split())[:300] or type(exc).__name__}
        sys.stdout.write(json.dumps(data) + "\n")

    return failure


def _print_scan_summary(summary) -> None:
    rate = f"{summary.videos_per_s:.2f} objects/s" if summary.scanned else "-"
    console.print(
        f"[bold]scan {summary.scan_id}[/bold] ({summary.model_version}): {summary.seen} objects seen, "
        f"{summary.skipped} skipped (already scanned), {summary.scanned} scanned, "
        f"[magenta]{summary.failed} failed[/magenta], {summary.no_face} without a face, "
        f"[red]{summary.fakes} fake[/red], [green]{summary.reals} real[/green]; {rate} "
        f"({summary.scan_s:.1f} s scanning, {summary.elapsed_s:.1f} s in all)")
    if summary.deferred:
        rescans = (f", {summary.deferred_rescans} of them rescans that only a run with --retry-errors / --full takes"
                   if summary.deferred_rescans else "")
        console.print(f"  {summary.deferred} objects left for the next run (--max-objects){rescans}")
    if summary.deleted:
        console.print(f"  {summary.deleted} objects gone from the source since their last row (deleted or renamed): "
                      "marked DELETED, out of the current verdicts")
    if summary.deletions_held:
        console.print(f"  [yellow]{summary.deletions_held} objects not listed but not marked deleted[/yellow]: more "
                      "than --max-deleted-share of the source at once (the warning above says why)")
    if summary.rescored:
        console.print(f"  {summary.rescored} objects scored again: the scoring settings or weights changed "
                      f"(scoring key {summary.scoring_key})")
    if summary.unlisted:
        console.print(f"  [yellow]{summary.unlisted} not listed[/yellow]: folders it cannot read or names that are not "
                      "UTF-8 (the warnings above name them)")
    if summary.lost:
        console.print(f"  {summary.lost} objects crashed their worker on every retry (rows with label ERROR)")
    for uri in summary.quarantined:
        console.print(f"  [yellow]quarantined[/yellow] unreadable part {escape(uri)}", soft_wrap=True)
    record = (f"run record: _runs/{summary.scan_id}.json" if summary.record_written
              else f"run record _runs/{summary.scan_id}.json could not be written")
    console.print(f"output: {escape(summary.output)}   (deepfakestream report {escape(summary.output)}); {record}",
                  soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
