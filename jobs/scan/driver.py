"""``deepfakestream scan``: score every video and image under a bucket prefix with Ray Data → Parquet.

The graph is the one in ``pipeline/`` (``pipeline.graph.stage_specs``: decode → detect → score), mapped
onto ``map_batches`` by the plan the cluster calls for (``jobs/scan/plan.py``)::

    listing (driver) → from_items(uri, size, etag, mtime, fingerprint)
      → fused plan (no GPU): Graph actors, one per CPU: decode → detect → score → rows, frames stay in-process
        split plan (GPUs):   DecodeStage (CPU actors; --shrink-frames: at the detector's working size)
                             → DetectStage (model actors: MTCNN → face crops; frames dropped here)
                             → ScoreStage → RowsStage (model actors: crops → scores → verdict → Arrow rows)
      → driver: Arrow tables → Parquet parts committed atomically every --commit-every rows / --commit-seconds

The driver holds only the listing and the rows waiting for the next commit (no pixels), so memory
stays flat as the bucket grows; Ray Data's streaming executor bounds what is in flight between stages.
Incremental: an object whose latest row has the same fingerprint, model version and scoring key is skipped;
a capped run takes new objects first (``jobs/scan/incremental.py``).
See docs/scan.md. (A little over the usual module size: the commit loop's state is shared by closures of
one function, and splitting it would pass that state around instead.)
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from jobs.scan.config import ScanConfig
from jobs.scan.errors import CRASHED, ScanAborted, ScanError
from jobs.scan.exit_codes import ExitCode
from jobs.scan.ids import after, id_time, new_scan_id, part_scan_id
from jobs.scan.incremental import RESCANS, SETTINGS, gone, tombstones, uri_prefix, work
from jobs.scan.lease import LeaseHeld, LeaseLost, OutputLease
from jobs.scan.listing import Coverage, list_objects
from jobs.scan.output import CommitInfo, OutputError, OutputStore
from jobs.scan.schema import DELETED, FACES_SCHEMA
from jobs.scan.rows import lost_rows, unnest
from jobs.scan.plan import PoolPlan, build_dataset, check_device, data_context, not_started, plan_pools
from jobs.scan.placement import nodes_now
from jobs.scan.ray_session import ensure_ray
from jobs.scan.records import (RUNS_DIR, RunRecord, close_all_unfinished, record_id, record_paths, settings_digest,
                               since_last_sweep, tally, write_record)
from jobs.scan.stop import GracefulStop, Terminated
from pipeline.config import Settings
from pipeline.errors import DeepfakeStreamError, one_line
from pipeline.logsafe import log_safe, redact_uri, redact_uris

log = logging.getLogger(__name__)

CLOCK_SLACK_S = 60  # an id this far or more ahead of this machine's clock is a clock out of sync, said loudly

Outcome = tuple[str, int, str | None, str | None]  # status, exit code, message, error code


@dataclass
class ScanSummary:
    source: str
    output: str
    scan_id: str
    model_version: str
    scoring_key: str = ""
    seen: int = 0
    unlisted: int = 0  # left out of the listing, each warned: a folder it cannot read, a name that is not UTF-8
    skipped: int = 0
    deleted: int = 0  # gone from the source since their last row (deleted, renamed): tombstones committed (DELETED)
    deletions_held: int = 0  # gone too, but past scan.max_deleted_share of the source's objects: not marked
    deferred: int = 0
    deferred_rescans: int = 0  # of the deferred, rescans that only another --retry-errors / --full run takes
    rescored: int = 0  # scanned again because the scoring key changed (settings, weights, card)
    scanned: int = 0  # this and the counts by label below: rows committed (not those a refused part held)
    failed: int = 0
    lost: int = 0
    no_face: int = 0
    fakes: int = 0
    reals: int = 0
    parts: int = 0
    scan_s: float = 0.0
    elapsed_s: float = 0.0
    videos_per_s: float = 0.0
    plan: dict[str, Any] = field(default_factory=dict)
    error_rate: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)
    status: str = "running"
    exit_code: int = 0
    error_code: str | None = None  # the stable code of what stopped the scan (e.g. source_not_found)
    message: str | None = None
    record_written: bool = False  # whether the final run record made it to DEST/_runs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="obj", desc="scanning", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def run_scan(settings: Settings, options: ScanConfig | None = None,
             on_commit: Callable[[CommitInfo], None] | None = None,
             on_plan: Callable[[PoolPlan], None] | None = None,
             on_end: Callable[[ScanSummary], None] | None = None) -> ScanSummary:
    """Scan ``options.source`` into ``options.output`` (``options``: ``settings.scan`` unless given); returns
    the summary (``status``, ``exit_code``). ``on_plan`` hears the plan once it is chosen (the CLI prints it);
    ``on_end`` the final summary however the scan ends, once it has one (the CLI's ``--json`` on failures).

    Raises ``ScanError`` / ``OutputError`` / ``DeepfakeStreamError`` (e.g. ``NoTrainedModelError``) when
    the scan cannot run, ``LeaseHeld`` when another scan holds the output, ``ScanAborted`` / ``LeaseLost``
    when it stops part-way, ``Terminated`` (SIGTERM) / ``KeyboardInterrupt`` when stopped; committed parts
    are kept in every case. Bad objects never raise: they get ERROR / NO_FACE rows. Once the output's
    lease is taken, every outcome ends with a run record in ``DEST/_runs/<scan_id>.json``. URIs are read as given
    and stored, recorded and said without credentials (``pipeline.logsafe.redact_uri``).
    """
    from pipeline.card import pack_checkpoint
    from pipeline.checkpoint import check_card
    from pipeline.graph import stage_specs
    from pipeline.scoring_key import SCAN_REVISION, scoring_key, weights_digest

    options = options or settings.scan
    if not options.source:
        raise ScanError("nothing to scan: give a source (the scan command's argument, or scan.source)")
    check_device(settings.device, options)  # a GPU this machine lacks, before the model, the lease and Ray
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    scan_id = new_scan_id(now)

    # 1. The model's card and the weights' bytes, not the network (the score actors load it; cluster nodes
    # need no file): fail before anything else when there is none, or when the card is not these weights' (the
    # actors' load would refuse it, inside Ray, as a crash): no record, the output is not opened.
    packed = pack_checkpoint(settings.classify.checkpoint)
    check_card(settings.classify.checkpoint, packed)
    card = packed[0]
    verdict = stage_specs(settings, packed=packed)[-1].kwargs  # threshold and aggregation the actors will use
    # what makes a score and a verdict (not the device, batches, threads or limits): a change rescans
    # (incremental.py). Shrunk frames count where the plan may be split (auto: known only once Ray is up)
    key = scoring_key(settings, weights_digest(packed[1]), verdict=True, engine=False, card=card,
                      shrink_frames=options.shrink_frames and options.plan != "fused", revision=SCAN_REVISION)

    # 2. The output's lease, before anything touches DEST (its clean-up must not race a running scan).
    output_options = options.storage_options(options.output)
    try:
        store = OutputStore(options.output, output_options)
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing backend, bad options
        raise OutputError(f"cannot open output {options.output}: {one_line(exc)}") from exc
    summary = ScanSummary(source=redact_uri(options.source), output=redact_uri(store.display), scan_id=scan_id,
                          model_version=card.version, scoring_key=key)
    record = RunRecord(scan_id=scan_id, source=summary.source, output=summary.output, started_at=now,
                       model_version=card.version, settings_digest=settings_digest(settings), scoring_key=key,
                       options=_record_options(options))
    store.check_schema()  # before the lease and the record: an output of a newer schema is not ours to write in
    lease = OutputLease(store.fs, store.root, store.display, scan_id, options.lease_seconds)
    try:
        lease.acquire()
    except LeaseHeld as exc:
        _finish(store, record, summary, ("busy", ExitCode.BUSY, str(exc), exc.code), started)
        if on_end:
            on_end(summary)
        raise
    except Exception as exc:  # noqa: BLE001 - credentials, network, permissions, missing bucket
        raise OutputError(f"cannot write to output {store.display}: {one_line(exc)}") from exc

    stop = GracefulStop(options.stop_timeout)
    stop.install()
    outcome: Outcome = ("aborted", ExitCode.ABORTED, "the scan crashed", CRASHED)
    try:
        with lease.kept_alive():  # from the first read on: start-up work on a slow store must not let it lapse
            paths = _record_paths(store)
            scan_id = _take_id(store, lease, record, summary, [record_id(p) for p in paths])
            lease.check()
            write_record(store, record)
            lapsed = lease.lapsed and (lease.lapsed.scan_id, lease.lapsed.heartbeat_at)
            record.swept = close_all_unfinished(store, since_last_sweep(store.fs, paths, lapsed and lapsed[0]), scan_id,
                                                lapsed)  # in its final record: later scans read back to it

            def listed() -> None:  # the listing's counts in the `running` record: a scan killed later still tells them
                _count(record, summary)
                lease.check()
                try:
                    write_record(store, record)
                except OutputError as exc:  # only a help: the final record says it all, or says why it cannot
                    log.warning("could not update the run record %s/%s/%s.json: %s", summary.output, RUNS_DIR,
                                record.scan_id, log_safe(exc))

            _scan(settings, options, store, summary, verdict, now.date().isoformat(), lease, stop, on_commit, on_plan,
                  listed)
        outcome = _outcome(summary, options)
        return summary
    except KeyboardInterrupt as exc:
        # a SIGTERM that lands inside ray.get reaches here as a bare KeyboardInterrupt: Ray raises its own in its place
        if isinstance(exc, Terminated) or stop.requested:
            outcome = ("terminated", ExitCode.TERMINATED, "stopped by SIGTERM; finished rows were committed", "terminated")
            if not isinstance(exc, Terminated):
                raise Terminated("SIGTERM") from None
        else:
            outcome = ("interrupted", ExitCode.INTERRUPTED, "interrupted; finished rows were committed", "interrupted")
        raise
    except LeaseLost as exc:
        outcome = ("lease_lost", ExitCode.ABORTED, str(exc), exc.code)
        raise
    except ScanAborted as exc:
        outcome = ("aborted", ExitCode.ABORTED, str(exc), exc.code)
        raise
    except OutputError as exc:  # DEST refused: before prepare() passed, the scan could not start (its schema, an
        # unwritable folder); after, it would not take a part or the record part-way (a full disk, permissions)
        outcome = ("output_error" if store.prepared else "not_started", ExitCode.NOT_STARTED, str(exc), exc.code)
        raise
    except DeepfakeStreamError as exc:  # source not found or not listable, output unusable, bad plan
        outcome = ("not_started", ExitCode.NOT_STARTED, str(exc), exc.code)
        raise
    except Exception as exc:
        outcome = ("aborted", ExitCode.ABORTED, one_line(exc),
                   CRASHED)
        raise
    finally:
        # SIGTERM stays held off while the record is written: the last thing a stopping scan does
        with stop.critical(then_stop=False):
            _finish(store, record, summary, outcome, started)
            lease.release()
        stop.restore()
        if on_end:
            on_end(summary)


def _record_options(options: ScanConfig) -> dict[str, Any]:
    keep = ("full", "retry_errors", "extensions", "include", "exclude", "max_objects", "max_error_rate",
            "commit_every", "commit_seconds", "max_task_retries", "max_failed_batches", "lost_retries", "ray_address", "endpoint_url")
    hidden = ("endpoint_url", "ray_address")  # URIs that may carry credentials
    return {k: redact_uri(getattr(options, k)) if k in hidden and getattr(options, k) else getattr(options, k)
            for k in keep}


def _record_paths(store: OutputStore) -> list[str]:
    try:
        return record_paths(store.fs, store.root)
    except Exception as exc:  # noqa: BLE001 - the storage failed the listing: DEST cannot be used
        raise OutputError(f"cannot read the run records of output {store.display}: {one_line(exc)}") from exc


def _take_id(store: OutputStore, lease: OutputLease, record: RunRecord, summary: ScanSummary,
             record_ids: list[str]) -> str:
    """This scan's id: after every id already in DEST, its run records' and its parts' (``jobs/scan/ids.py``), so
    that its rows are the latest even when a scan whose clock ran ahead wrote there; the lease says it too."""
    known = record_ids + [part_scan_id(name) for name in store.list_parts("videos")]
    scan_id, last = after(summary.scan_id, known)
    if last is None:
        return scan_id
    ahead = (id_time(last) - id_time(summary.scan_id)).total_seconds()
    (log.warning if ahead >= CLOCK_SLACK_S else log.info)(
        "scan %s of %s is dated %.0f s ahead of this machine's clock (a clock ahead wrote it, or this one is behind: "
        "check NTP); this scan takes the id %s, after it, so that its rows are the latest", last, store.display,
        ahead, scan_id)
    summary.scan_id = record.scan_id = lease.scan_id = scan_id
    lease.renew()  # the lease names the id of the record: a scan killed now is found by it
    return scan_id


def _percent(share: float) -> str:
    return f"{share * 100:.6g}%"  # enough digits that 50.001% is not shown as 50%


def _outcome(summary: ScanSummary, options: ScanConfig) -> Outcome:
    # the exact share, not summary.error_rate (rounded for display): 50001 of 100000 is over 0.5
    share = summary.failed / summary.scanned if summary.scanned else 0.0
    if share > options.max_error_rate:
        return ("too_many_errors", ExitCode.TOO_MANY_ERRORS,
                f"{summary.failed} of {summary.scanned} objects got ERROR rows ({_percent(share)}), over "
                f"--max-error-rate {_percent(options.max_error_rate)}; every row was committed", "too_many_errors")
    return "succeeded", ExitCode.OK, None, None


def _finish(store: OutputStore, record: RunRecord, summary: ScanSummary, outcome: Outcome, started: float) -> None:
    """Fill the summary's outcome and write the final run record. When the output refuses it, ``record_written``
    stays false and a scan that would exit 0 is an ``output_error`` (exit 2): nothing else would tell (its record
    says ``running`` until the next scan ends it)."""
    status, code, message, summary.error_code = outcome
    message = message and redact_uris(message)  # exceptions quote the URIs they were given
    summary.status, summary.exit_code, summary.message = status, int(code), message
    summary.quarantined = list(store.quarantined)
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    record.status, record.exit_code, record.error_code, record.message = status, int(code), summary.error_code, message
    record.ended_at = datetime.now(timezone.utc)
    record.elapsed_s = summary.elapsed_s
    _count(record, summary)
    try:
        write_record(store, record)
        summary.record_written = True
    except Exception as exc:  # noqa: BLE001 - a failing scan's own outcome matters more than its record
        log.warning("could not write the run record %s/%s/%s.json: %s", summary.output, RUNS_DIR, record.scan_id,
                    log_safe(exc))
        if summary.exit_code == ExitCode.OK:
            summary.status, summary.exit_code, summary.error_code = ("output_error", int(ExitCode.NOT_STARTED),
                                                                     OutputError.code)
            said = str(exc) if isinstance(exc, OutputError) else f"cannot write {RUNS_DIR}/{record.scan_id}.json: {one_line(exc)}"
            summary.message = f"{redact_uris(said)}; the scan's rows were committed, its run record was not"


def _count(record: RunRecord, summary: ScanSummary) -> None:
    """The summary's counts (so far) into the run record."""
    record.plan = summary.plan
    record.listed, record.unlisted, record.skipped, record.deferred = (summary.seen, summary.unlisted, summary.skipped,
                                                                       summary.deferred)
    record.rescored, record.deleted, record.deletions_held = summary.rescored, summary.deleted, summary.deletions_held
    record.scanned, record.lost, record.parts = summary.scanned, summary.lost, summary.parts
    record.labels = {k: v for k, v in (("FAKE", summary.fakes), ("REAL", summary.reals),
                                       ("NO_FACE", summary.no_face), ("ERROR", summary.failed)) if v}
    record.errors = dict(summary.errors)
    record.error_rate = summary.error_rate
    record.quarantined = list(summary.quarantined)


def _work(store: OutputStore, entries: list[dict], scan_id: str, model_version: str, key: str,
          options: ScanConfig, coverage: Coverage | None = None) -> tuple[list[tuple[dict, str]], pa.Table | None, int]:
    """(entry, why) for the entries to scan, new ones first (``jobs.scan.incremental.work``), and the latest rows of
    the objects gone from the source (``incremental.gone``: what ``coverage`` vouches for that was not listed; none
    without one), and how many gone objects were held back: past ``scan.max_deleted_share`` of the source's current
    objects none is marked. The rows hold each object's URI redacted (``jobs.scan.rows``): entries are matched to them
    by theirs, and come back as listed."""
    shown = [_shown(entry) for entry in entries]
    listed = {id(s): entry for s, entry in zip(shown, entries)}
    vouched = coverage is not None and not coverage.single
    root = f"{coverage.root.rstrip('/')}/" if vouched else ""
    if vouched and not all(s["uri"].startswith(root) for s in shown):  # s3://b//v lists s3://b/v/…: another spelling
        log.warning("the listing's objects are not all under %s as spelled: none is marked deleted this time",
                    redact_uri(coverage.root))
        vouched = False
    if not entries and not vouched:
        return [], None, 0
    latest = store.latest(scan_id, prefix=root if vouched else uri_prefix(shown))
    chosen = [(listed[id(s)], why) for s, why in work(shown, latest, model_version, key, options.retry_errors, options.full)]
    if not vouched:
        return chosen, None, 0
    missing = gone(latest, [s["uri"] for s in shown], coverage.covers)
    if missing.num_rows > options.max_deleted_share * latest.num_rows:  # most of the source gone at once: held
        log.warning("%d of the %d objects under %s were not listed this time: more than scan.max_deleted_share (%g), "
                    "so none is marked deleted (an unmounted volume, a half-done sync would look the same); if they "
                    "were deleted, scan once with --max-deleted-share 1", missing.num_rows, latest.num_rows,
                    redact_uri(coverage.root), options.max_deleted_share)
        return chosen, None, missing.num_rows
    return chosen, missing, 0


def _shown(entry: dict) -> dict:
    """A listing entry with its URI as the rows store it (the entry itself when that is the same: no copy)."""
    uri = redact_uri(entry["uri"])
    return entry if uri == entry["uri"] else {**entry, "uri": uri}


def _scan(settings: Settings, options: ScanConfig, store: OutputStore, summary: ScanSummary, verdict: dict[str, Any],
          scan_date: str, lease: OutputLease, stop: GracefulStop,
          on_commit: Callable[[CommitInfo], None] | None, on_plan: Callable[[PoolPlan], None] | None,
          listed: Callable[[], None] = lambda: None) -> None:
    """List, skip what is done, mark what is gone, run the Ray Data graph, commit parts; fills ``summary``.
    ``listed`` hears when the listing's counts are in it."""
    scan_id = summary.scan_id
    source_options = options.storage_options(options.source)
    unlisted: list[str] = []  # what the listing had to leave out (it warns about each)
    coverage = Coverage()  # what the listing vouches for: under it, an object not listed is gone
    entries = list_objects(options.source, source_options, options.extensions, options.include, options.exclude,
                           unlisted=unlisted, coverage=coverage)
    summary.unlisted = len(unlisted)
    store.prepare()
    store.quarantine_unreadable(scan_id)
    summary.quarantined = list(store.quarantined)
    summary.seen = len(entries)
    chosen, missing, summary.deletions_held = _work(store, entries, scan_id, summary.model_version, summary.scoring_key,
                                                    options, coverage)
    summary.skipped = len(entries) - len(chosen)
    if options.max_objects is not None:  # after skipping, so successive capped runs walk the whole bucket
        later, chosen = chosen[options.max_objects:], chosen[: options.max_objects]
        summary.deferred = len(later)
        summary.deferred_rescans = sum(why in RESCANS for _entry, why in later)
    todo = [entry for entry, _why in chosen]
    summary.rescored = sum(why == SETTINGS for _entry, why in chosen)
    reasons = Counter(why for _entry, why in chosen)
    gone_n = missing.num_rows if missing is not None else 0
    log.info("%d objects listed, %d already scanned, %d to scan%s%s%s", len(entries), summary.skipped, len(todo),
             f" ({', '.join(f'{n} {why}' for why, n in reasons.items())})" if todo else "",
             f", {summary.deferred} left for later (--max-objects)" if summary.deferred else "",
             f", {gone_n} gone from the source since their last row (marked {DELETED})" if gone_n else "")
    if summary.rescored:
        log.warning("%d objects will be scored again: the scoring settings, card or weights changed since their "
                    "last row (scoring key now %s)", summary.rescored, summary.scoring_key)
    listed()

    pending_videos: list[pa.Table] = []
    pending_faces: list[pa.Table] = []
    last_commit = time.monotonic()

    def waiting() -> int:
        return sum(t.num_rows for t in pending_videos)

    def commit() -> None:
        nonlocal pending_videos, pending_faces, last_commit
        if not waiting():
            return
        part = f"part-{scan_id}-{summary.parts:05d}"
        with stop.critical():
            videos, faces = pa.concat_tables(pending_videos), pa.concat_tables(pending_faces)
            # the lease is checked before each file: never write into an output that may be another scan's
            store.commit(part, scan_date, videos, faces, check=lease.check)
            summary.parts += 1
            count(videos)  # what was committed: a part the output refused is not counted
            info = CommitInfo(part=part, videos=videos.num_rows, faces=faces.num_rows, total_videos=summary.scanned)
            log.info("committed %s (%d videos, %d faces)", part, info.videos, info.faces)
            pending_videos, pending_faces = [], []
            last_commit = time.monotonic()
        if on_commit:
            on_commit(info)

    def count(videos: pa.Table) -> None:
        labels, errors = tally(videos)  # errors by the stable code, never by the message's wording
        summary.deleted += labels.get(DELETED, 0)  # tombstones: no object scanned
        summary.scanned += videos.num_rows - labels.get(DELETED, 0)
        summary.failed += labels.get("ERROR", 0)
        summary.no_face += labels.get("NO_FACE", 0)
        summary.fakes += labels.get("FAKE", 0)
        summary.reals += labels.get("REAL", 0)
        for kind, n in errors.items():
            summary.errors[kind] = summary.errors.get(kind, 0) + n
        summary.error_rate = round(summary.failed / summary.scanned, 4) if summary.scanned else 0.0

    if gone_n:  # committed with the first part: a scan stopped before that marks none, and the next scan does
        pending_videos.append(tombstones(missing, scan_id, datetime.now(timezone.utc)))
        pending_faces.append(FACES_SCHEMA.empty_table())
    if not todo:
        commit()
        return

    # 3. Ray Data.
    started_ray = ensure_ray(options)  # with the SIGTERM handler put back: ray.init replaces it
    import ray

    scan_start: float | None = None
    try:
        cluster, free = ray.cluster_resources(), ray.available_resources()
        # from what is free (a cluster Serve shares); no pool larger than its objects: the plan said is the one used
        plan = plan_pools(cluster, options, settings.device, free, nodes_now()).at_most(len(todo))
        if not options.torch_threads and settings.torch_threads:
            plan.torch_threads = settings.torch_threads  # the config file's torch_threads applies per actor
        summary.plan = asdict(plan)
        log.info("%s (cluster %s, free %s)", plan.line(), cluster, free)
        if on_plan:
            on_plan(plan)
        from pipeline.graph import stage_specs

        # the packed weights travel to the actors in the object store (once); where frames travel (split),
        # shrink_frames sends them at the detector's working size
        specs = stage_specs(
            settings, storage_options=source_options, torch_threads=plan.torch_threads, packed=verdict["packed"],
            shrink_frames=plan.plan == "split" and options.shrink_frames, thumbnails=options.thumbnails,
            thumbnail_px=options.thumbnail_px, listed=True)
        scan_start = time.perf_counter()  # scan_s: from here (Ray up, the plan made) however the scan ends
        returned: set[str] = set()
        last_commit = time.monotonic()

        def stream(entries: list[dict], bar: Any, pass_options: ScanConfig) -> Exception | None:
            """One Ray Data pass over ``entries``; returns what made Ray Data give up, if it did."""
            with data_context(pass_options):
                ds = build_dataset(entries, specs, plan, pass_options, scan_id, summary.scoring_key)
                batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1))
                try:
                    for table in batches:  # rows as the last actor built them
                        videos, faces = unnest(table)
                        uris = videos.column("uri").to_pylist()
                        if any(uri in returned for uri in uris):  # never twice per run (a retried batch came back)
                            videos = videos.filter(pa.array([uri not in returned for uri in uris]))
                            faces = faces.filter(pc.is_in(faces.column("uri"), value_set=videos.column("uri").combine_chunks()))
                        returned.update(uris)
                        pending_videos.append(videos)
                        pending_faces.append(faces)
                        bar.update(videos.num_rows)
                        bar.set_postfix(fakes=summary.fakes, failed=summary.failed, refresh=False)
                        if (waiting() >= options.commit_every
                                or time.monotonic() - last_commit >= options.commit_seconds):
                            commit()
                except KeyboardInterrupt:  # Ctrl-C or SIGTERM (Terminated)
                    with stop.critical():
                        commit()  # finished rows are complete: keep them
                    raise
                except (LeaseLost, OutputError):  # a commit that could not be made: not Ray Data's failure
                    raise
                except Exception as exc:  # noqa: BLE001 - Ray Data gave up; keep what is done
                    busy = not_started(exc, plan.at_most(len(entries)), pass_options)  # no room for the actors
                    if busy is not None and not returned:
                        raise busy from exc
                    return busy or exc
                finally:
                    close = getattr(batches, "close", None)
                    if close is not None:  # stop the executor and its actors now, not when GC runs
                        close()
            return None

        # Objects a pass never returned (their batch failed on every retry: a crashing file, or a node
        # lost before Ray noticed it was dead, which burns the retries in seconds) get --lost-retries
        # more passes with fresh actors before they are written off as ERROR rows.
        aborted: Exception | None = None
        passes = 0
        bar = _progress(len(todo), options.progress)
        try:
            remaining = todo
            while remaining and aborted is None and passes <= options.lost_retries:
                if passes:
                    log.warning("%d objects were not returned (worker or node lost): scanning them again", len(remaining))
                # a rescan pass queues one batch per actor: an innocent object queued behind a crashing one
                # shared its crashes (and retries) in the first pass, never again here
                aborted = stream(remaining, bar, options.model_copy(update={"tasks_per_actor": 1}) if passes else options)
                passes += 1
                remaining = [e for e in todo if redact_uri(e["uri"]) not in returned]
        finally:
            bar.close()
        commit()
        if aborted is not None:
            raise ScanAborted(
                f"the scan stopped after {summary.scanned} of {len(todo)} objects: "
                f"{one_line(aborted)}. Committed results are kept; "
                "run the same command again to scan the rest.") from aborted
        lost = [e for e in todo if redact_uri(e["uri"]) not in returned]
        if lost:
            message = (f"not scanned: the Ray worker processing this object failed {passes * (options.max_task_retries + 1)} "
                       "times (crash or out of memory; see the Ray logs); rerun with --retry-errors to try again")
            at = datetime.now(timezone.utc)
            rows = lost_rows(lost, message, scan_id, at, summary.model_version, verdict["threshold"], verdict["aggregation"],
                             summary.scoring_key)
            pending_videos.append(rows)
            pending_faces.append(FACES_SCHEMA.empty_table())
            commit()
            summary.lost = rows.num_rows
    finally:
        if scan_start is not None:  # a scan stopped part-way (SIGTERM, Ctrl-C, aborted) scanned for that long too
            summary.scan_s = round(time.perf_counter() - scan_start, 3)
            summary.videos_per_s = round(summary.scanned / summary.scan_s, 3) if summary.scan_s else 0.0
        if started_ray:
            ray.shutdown()


__all__ = ["ScanSummary", "run_scan"]
