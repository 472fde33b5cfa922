"""``deepfakestream scan``: score every video and image under a bucket prefix with Ray Data → Parquet.

The graph is the one in ``pipeline/`` (decode → detect → classify → aggregate), each stage wrapped
unchanged in a callable class that Ray Data runs in an actor pool::

    listing (driver) → from_items(uri, size, etag, mtime, fingerprint)
      → DecodeWorker   (CPU actors: read the object, sample N frames; only those frames travel on)
      → DetectWorker   (model actors: MTCNN → face crops; the frames are dropped here)
      → ClassifyWorker (model actors: crops → face scores → AggregateStage → score + label)
      → driver: rows → Parquet parts committed atomically every --commit-every rows / --commit-seconds

The driver holds only the listing and the rows waiting for the next commit (no pixels), so memory
stays flat as the bucket grows; Ray Data's streaming executor bounds what is in flight between stages.
Incremental: an object already scanned with the same (uri, fingerprint, model_version) is skipped.
See docs/scan.md.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import sys
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import fsspec
import numpy as np

from jobs.scan_exit import ExitCode
from jobs.scan_lease import LeaseHeld, LeaseLost, OutputLease
from jobs.scan_output import CommitInfo, OutputError, OutputStore, error_row, rows_from_batch
from jobs.scan_records import RUNS_DIR, RunRecord, error_class, record_bytes, settings_digest
from jobs.scan_stop import GracefulStop, Terminated
from pipeline.config import Settings
from pipeline.errors import DeepfakeStreamError
from pipeline.media import MEDIA_EXTENSIONS, normalize_uri

log = logging.getLogger(__name__)

DEFAULT_OUTPUT = "./scan-output"


class ScanError(DeepfakeStreamError):
    """The scan itself cannot run (bad source, unusable output, no model, no cluster)."""


class ScanAborted(DeepfakeStreamError):
    """The scan started but Ray Data gave up (more failed batches than --max-failed-batches)."""


@dataclass
class ScanOptions:
    source: str
    output: str = DEFAULT_OUTPUT
    full: bool = False
    retry_errors: bool = False
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_objects: int | None = None
    # storage
    endpoint_url: str | None = None
    anon: bool = False
    profile: str | None = None
    # Ray / resources (None = sized from the cluster)
    ray_address: str | None = None
    num_cpus: int | None = None
    decode_actors: int | None = None
    detect_actors: int | None = None
    classify_actors: int | None = None
    gpus_per_actor: float | None = None
    torch_threads: int | None = None
    classify_batch: int = 4
    decode_batch: int = 1
    object_store_limit: int | None = None
    # fault tolerance and commits
    max_task_retries: int = 2
    max_restarts: int = -1
    max_failed_batches: int = 16
    lost_retries: int = 1
    commit_every: int = 256
    commit_seconds: float = 60.0
    # operations: alerting, one scan per output, bounded stop
    max_error_rate: float = 0.5
    lease_seconds: float = 120.0
    stop_timeout: float = 25.0
    # display
    progress: bool = True
    ray_progress: bool = False
    verbose: bool = False


@dataclass
class ScanSummary:
    source: str
    output: str
    scan_id: str
    model_version: str
    seen: int = 0
    skipped: int = 0
    deferred: int = 0
    scanned: int = 0
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
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ storage
def storage_options_for(uri: str, endpoint_url: str | None = None, anon: bool = False,
                        profile: str | None = None) -> dict[str, Any]:
    """fsspec options for ``uri``. For s3:// the endpoint comes from the flag, else AWS_ENDPOINT_URL(_S3).

    Credentials found in the driver's environment are passed on explicitly, so Ray workers on other
    nodes (which may not share the driver's environment) read with the same identity.
    """
    protocol = fsspec.core.split_protocol(uri)[0]
    if protocol not in ("s3", "s3a"):
        return {}
    options: dict[str, Any] = {}
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    if anon:
        options["anon"] = True
    elif profile:
        options["profile"] = profile
    elif os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["token"] = os.environ["AWS_SESSION_TOKEN"]
    return options


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _epoch(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return math.nan
    return float(value)


def fingerprint(size: int, etag: str, mtime: float) -> str:
    """What identifies one version of an object: its ETag when the store has one, else size + mtime."""
    if etag:
        return f"etag:{etag}"
    return f"size:{size}:mtime:{'none' if math.isnan(mtime) else f'{mtime:.6f}'}"


def object_entry(uri: str, info: dict[str, Any]) -> dict[str, Any]:
    etag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "").strip('"')
    mtime = _epoch(info.get("mtime") or info.get("LastModified") or info.get("updated")
                   or info.get("last_modified") or info.get("modified"))
    size = int(info.get("size") or info.get("Size") or 0)
    return {"uri": uri, "size": size, "etag": etag, "mtime": mtime, "fingerprint": fingerprint(size, etag, mtime)}


def list_objects(source: str, storage_options: dict[str, Any], extensions: tuple[str, ...] = MEDIA_EXTENSIONS,
                 include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                 max_objects: int | None = None) -> list[dict[str, Any]]:
    """Every media object under ``source`` (a prefix, folder or single object), sorted by URI."""
    source = normalize_uri(source)  # `S3://b/x` and `s3://b/x` are one source (fsspec knows only the latter)
    try:
        fs, root = fsspec.core.url_to_fs(source, **storage_options)
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing fsspec backend, bad options
        raise ScanError(f"cannot open source {source}: {type(exc).__name__}: {exc}") from exc
    local = _is_local(fs)
    root = os.path.abspath(root) if local else root.rstrip("/")
    fs.invalidate_cache()  # a long-lived process must see tonight's objects, not a cached listing
    try:
        if fs.isfile(root):
            infos = {root: fs.info(root)}
        else:
            infos = fs.find(root, detail=True, withdirs=False)
            if not infos:
                container = root if local else root.split("/")[0]
                if not fs.exists(container):
                    raise ScanError(f"source not found: {source}")
    except ScanError:
        raise
    except Exception as exc:  # noqa: BLE001 - credentials, network, permissions
        raise ScanError(f"cannot list source {source}: {type(exc).__name__}: {exc}") from exc
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    entries = []
    for path, info in sorted(infos.items()):
        if info.get("type", "file") != "file":
            continue
        rel = path[len(root):].lstrip("/") or os.path.basename(path)
        name = os.path.basename(path)
        if suffixes and not name.lower().endswith(suffixes):
            continue
        if include and not any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in include):
            continue
        if exclude and any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in exclude):
            continue
        uri = path if local else fs.unstrip_protocol(path)
        entries.append(object_entry(uri, info))
        if max_objects is not None and len(entries) >= max_objects:
            break
    return entries


# -------------------------------------------------------------------------------------- pool plan
@dataclass
class PoolPlan:
    """How many actors of each kind, and what each one asks Ray for."""

    decode_actors: int
    detect_actors: int
    classify_actors: int
    cpus_per_actor: float
    detect_gpus: float
    classify_gpus: float
    torch_threads: int


def plan_pools(cluster: dict[str, float], options: ScanOptions, device: str = "auto") -> PoolPlan:
    """Size the actor pools from the cluster's resources.

    Actors together ask for at most (CPUs - 1), so Ray Data always has a CPU left for its own tasks
    (on a 2-core machine, actor pools that hold every CPU starve the pipeline and it deadlocks).
    With GPUs (and device not cpu), detect and classify actors share them, decode actors stay on CPU.
    """
    cpus = float(cluster.get("CPU", 1.0))
    gpus = float(cluster.get("GPU", 0.0)) if device != "cpu" else 0.0
    if device.startswith("cuda") and gpus < 1 and not options.gpus_per_actor:
        raise ScanError(f"device {device!r} requested but the Ray cluster has no GPU")
    if gpus >= 1:
        model_actors = max(1, int(gpus))
        detect = options.detect_actors or model_actors
        classify = options.classify_actors or model_actors
        decode = options.decode_actors or max(1, min(int(cpus) - 1, 2 * (detect + classify)))
        per_gpu = options.gpus_per_actor or min(1.0, gpus / (detect + classify))
        detect_gpus = classify_gpus = round(per_gpu, 4)
    else:
        # Detect and classify cost about the same on CPU (measured, 1 thread: 40/56% of a video's time with a
        # 224 px classifier, 60/30% with the shipped 160 px one; decode 4-10%): equal pools.
        detect = options.detect_actors or max(1, round(0.45 * cpus))
        classify = options.classify_actors or max(1, round(0.45 * cpus))
        decode = options.decode_actors or max(1, int(cpus) // 8)
        detect_gpus = classify_gpus = options.gpus_per_actor or 0.0
    total = decode + detect + classify
    budget = cpus - 1 if cpus >= 2 else cpus / 2
    cpus_per_actor = max(0.01, min(1.0, budget / total))
    threads = options.torch_threads or max(1, int(cpus_per_actor))
    cpus_per_actor = math.floor(cpus_per_actor * 1e4) / 1e4  # round down: the sum must stay under budget
    return PoolPlan(decode, detect, classify, cpus_per_actor, detect_gpus, classify_gpus, threads)


# ------------------------------------------------------------------------------------------ Ray
def ensure_ray(options: ScanOptions) -> bool:
    """Connect to RAY_ADDRESS / --ray-address, or start a local instance. True when we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = options.ray_address or os.environ.get("RAY_ADDRESS")
    common = {"log_to_driver": options.verbose, "logging_level": logging.INFO if options.verbose else logging.WARNING}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=options.num_cpus, include_dashboard=False, **common)
    except Exception as exc:  # noqa: BLE001
        raise ScanError(f"cannot start or reach Ray ({address or 'local'}): {type(exc).__name__}: {exc}") from exc
    return True


@contextmanager
def _data_context(options: ScanOptions) -> Iterator[None]:
    """Ray Data settings for one scan (restored afterwards: the context is process-wide)."""
    from ray.data import DataContext
    from ray.data._internal.execution.interfaces.execution_options import ExecutionResources

    if not options.verbose:  # our own bar and summary say it; keep Ray Data's notices out of the way
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    saved = {"max_errored_blocks": ctx.max_errored_blocks, "enable_progress_bars": ctx.enable_progress_bars,
             "print_on_execution_start": ctx.print_on_execution_start,
             "resource_limits": ctx.execution_options.resource_limits}
    ctx.max_errored_blocks = options.max_failed_batches
    ctx.enable_progress_bars = options.ray_progress
    ctx.print_on_execution_start = options.verbose
    if options.object_store_limit:
        ctx.execution_options.resource_limits = ExecutionResources.for_limits(object_store_memory=options.object_store_limit)
    try:
        yield
    finally:
        ctx.execution_options.resource_limits = saved.pop("resource_limits")
        for key, value in saved.items():
            setattr(ctx, key, value)


def build_dataset(entries: list[dict[str, Any]], specs: list, plan: PoolPlan, options: ScanOptions):
    """The Ray Data graph over ``entries`` (not executed until iterated): each stage class of
    ``pipeline.graph`` mapped as it is, with the arguments the graph resolved for it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated", category=DeprecationWarning)
        return _build_dataset(entries, specs, plan, options)


def _pool(size: int):
    """A fixed pool whose actors hold one batch at a time: when an object crashes its worker, only its
    own batch dies with it and is retried (with the default 2 in flight, an innocent batch queued on the
    same actor would share every crash and its objects would be lost too)."""
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1)


def _build_dataset(entries, specs, plan, options):
    import ray

    # Ray 2.60 has no named map_batches parameter for actor restarts / task retries, only the
    # deprecated **ray_remote_args (removed in 2.64: revisit then). Ray Data's own defaults are
    # infinite restarts *and* infinite retries, so an object that crashes its worker every time would
    # stall the scan forever; we keep restarts unlimited and bound the retries of each batch.
    fault = {"max_restarts": options.max_restarts, "max_task_retries": options.max_task_retries}
    common = {"batch_format": "numpy", "num_cpus": plan.cpus_per_actor, **fault}
    pools = {"decode": (plan.decode_actors, options.decode_batch, 0.0),
             "detect": (plan.detect_actors, options.decode_batch, plan.detect_gpus),
             "score": (plan.classify_actors, options.classify_batch, plan.classify_gpus)}
    ds = ray.data.from_items(entries, override_num_blocks=max(1, min(len(entries), 4096)))
    for spec in specs:
        actors, batch, gpus = pools[spec.name]
        ds = ds.map_batches(spec.cls, fn_constructor_kwargs=spec.kwargs, batch_size=batch, compute=_pool(actors),
                            num_gpus=gpus or None, **common)
    return ds


# ------------------------------------------------------------------------------------------ scan
def new_scan_id(now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="obj", desc="scanning", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def run_scan(settings: Settings, options: ScanOptions,
             on_commit: Callable[[CommitInfo], None] | None = None,
             on_rows: Callable[[int, int], None] | None = None) -> ScanSummary:
    """Scan ``options.source`` into ``options.output``; returns the summary (``status``, ``exit_code``).

    Raises ``ScanError`` / ``OutputError`` / ``DeepfakeStreamError`` (e.g. ``NoTrainedModelError``) when
    the scan cannot run, ``LeaseHeld`` when another scan holds the output, ``ScanAborted`` / ``LeaseLost``
    when it stops part-way, ``Terminated`` (SIGTERM) / ``KeyboardInterrupt`` when stopped; committed parts
    are kept in every case. Bad objects never raise: they get ERROR / NO_FACE rows. Once the output's
    lease is taken, every outcome ends with a run record in ``DEST/_runs/<scan_id>.json``.
    """
    from pipeline.checkpoint import read_card
    from pipeline.graph import stage_specs

    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    scan_id = new_scan_id(now)

    # 1. The model's card (the network is not loaded here): fail before anything else when there is none
    # (no record: the output is not opened).
    card = read_card(settings.classify.checkpoint)
    verdict = stage_specs(settings, card=card)[-1].kwargs  # threshold and aggregation the actors will use

    # 2. The output's lease, before anything touches DEST (its clean-up must not race a running scan).
    output_options = storage_options_for(options.output, options.endpoint_url, options.anon, options.profile)
    try:
        store = OutputStore(options.output, output_options)
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing backend, bad options
        raise OutputError(f"cannot open output {options.output}: {type(exc).__name__}: {exc}") from exc
    summary = ScanSummary(source=options.source, output=store.display, scan_id=scan_id,
                          model_version=card.version)
    record = RunRecord(scan_id=scan_id, source=options.source, output=store.display, started_at=now,
                       model_version=card.version, settings_digest=settings_digest(settings),
                       options=_record_options(options))
    lease = OutputLease(store.fs, store.root, store.display, scan_id, options.lease_seconds)
    try:
        lease.acquire()
    except LeaseHeld as exc:
        _finish(store, record, summary, "busy", ExitCode.BUSY, str(exc), started)
        raise
    except Exception as exc:  # noqa: BLE001 - credentials, network, permissions, missing bucket
        raise OutputError(f"cannot write to output {store.display}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc

    stop = GracefulStop(options.stop_timeout)
    stop.install()
    outcome: tuple[str, int, str | None] = ("aborted", ExitCode.ABORTED, "the scan crashed")
    try:
        _write_record(store, record)
        with lease.kept_alive():
            _scan(settings, options, store, summary, verdict, now.date().isoformat(), lease, stop, on_commit, on_rows)
        outcome = _outcome(summary, options)
        return summary
    except Terminated:
        outcome = ("terminated", ExitCode.TERMINATED, "stopped by SIGTERM; finished rows were committed")
        raise
    except KeyboardInterrupt:
        outcome = ("interrupted", ExitCode.INTERRUPTED, "interrupted; finished rows were committed")
        raise
    except LeaseLost as exc:
        outcome = ("lease_lost", ExitCode.ABORTED, str(exc))
        raise
    except ScanAborted as exc:
        outcome = ("aborted", ExitCode.ABORTED, str(exc))
        raise
    except DeepfakeStreamError as exc:  # source not listable, output unusable, bad plan
        outcome = ("not_started", ExitCode.NOT_STARTED, str(exc))
        raise
    except Exception as exc:
        outcome = ("aborted", ExitCode.ABORTED, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
        raise
    finally:
        # SIGTERM stays held off while the record is written: the last thing a stopping scan does
        with stop.critical(then_stop=False):
            _finish(store, record, summary, *outcome, started)
            lease.release()
        stop.restore()


def _record_options(options: ScanOptions) -> dict[str, Any]:
    keep = ("full", "retry_errors", "extensions", "include", "exclude", "max_objects", "max_error_rate",
            "commit_every", "commit_seconds", "max_task_retries", "max_failed_batches", "lost_retries", "ray_address", "endpoint_url")
    return {k: getattr(options, k) for k in keep}


def _outcome(summary: ScanSummary, options: ScanOptions) -> tuple[str, int, str | None]:
    if summary.error_rate > options.max_error_rate:
        return ("too_many_errors", ExitCode.TOO_MANY_ERRORS,
                f"{summary.failed} of {summary.scanned} objects got ERROR rows ({summary.error_rate:.0%}), "
                f"over --max-error-rate {options.max_error_rate:.0%}; every row was committed")
    return "succeeded", ExitCode.OK, None


def _write_record(store: OutputStore, record: RunRecord) -> None:
    store.put(f"{RUNS_DIR}/{record.scan_id}.json", record_bytes(record))


def _finish(store: OutputStore, record: RunRecord, summary: ScanSummary, status: str, code: int,
            message: str | None, started: float) -> None:
    """Fill the summary's outcome and write the final run record (a storage failure only warns)."""
    summary.status, summary.exit_code, summary.message = status, int(code), message
    summary.quarantined = list(store.quarantined)
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    record.status, record.exit_code, record.message = status, int(code), message
    record.ended_at = datetime.now(timezone.utc)
    record.elapsed_s = summary.elapsed_s
    record.plan = summary.plan
    record.listed, record.skipped, record.deferred = summary.seen, summary.skipped, summary.deferred
    record.scanned, record.lost, record.parts = summary.scanned, summary.lost, summary.parts
    record.labels = {k: v for k, v in (("FAKE", summary.fakes), ("REAL", summary.reals),
                                       ("NO_FACE", summary.no_face), ("ERROR", summary.failed)) if v}
    record.errors = dict(summary.errors)
    record.error_rate = summary.error_rate
    record.quarantined = summary.quarantined
    try:
        _write_record(store, record)
    except Exception as exc:  # noqa: BLE001 - the scan's own outcome matters more than its record
        log.warning("could not write the run record %s/%s/%s.json: %s", store.display, RUNS_DIR, record.scan_id, exc)


def _scan(settings: Settings, options: ScanOptions, store: OutputStore, summary: ScanSummary, verdict: dict[str, Any],
          scan_date: str, lease: OutputLease, stop: GracefulStop,
          on_commit: Callable[[CommitInfo], None] | None, on_rows: Callable[[int, int], None] | None) -> None:
    """List, skip what is done, run the Ray Data graph, commit parts; fills ``summary``."""
    scan_id = summary.scan_id
    source_options = storage_options_for(options.source, options.endpoint_url, options.anon, options.profile)
    entries = list_objects(options.source, source_options, options.extensions, options.include, options.exclude)
    store.prepare()
    store.quarantine_unreadable(scan_id)
    summary.seen = len(entries)
    done = {} if options.full else store.scanned(scan_id)
    todo = []
    for entry in entries:
        label = done.get((entry["uri"], entry["fingerprint"], summary.model_version))
        if label is None or (options.retry_errors and label == "ERROR"):
            todo.append(entry)
    summary.skipped = len(entries) - len(todo)
    if options.max_objects is not None:  # after skipping, so successive capped runs walk the whole bucket
        summary.deferred = max(0, len(todo) - options.max_objects)
        todo = todo[: options.max_objects]
    log.info("%d objects listed, %d already scanned, %d to scan", len(entries), summary.skipped, len(todo))
    if not todo:
        return

    # 3. Ray Data.
    started_ray = ensure_ray(options)
    stop.install()  # ray.init replaces the SIGTERM handler with a plain exit
    import ray

    try:
        cluster = ray.cluster_resources()
        plan = plan_pools(cluster, options, settings.device)
        if not options.torch_threads and settings.torch_threads:
            plan.torch_threads = settings.torch_threads  # the config file's torch_threads applies per actor
        summary.plan = asdict(plan)
        log.info("actor plan on %s: %s", cluster, plan)
        from pipeline.checkpoint import pack_checkpoint
        from pipeline.graph import stage_specs

        # the weights travel to the actors in the object store (once): cluster nodes need no checkpoint file
        specs = stage_specs(settings, storage_options=source_options, torch_threads=plan.torch_threads,
                            packed=pack_checkpoint(settings.classify.checkpoint))
        scan_start = time.perf_counter()
        pending_videos: list[dict] = []
        pending_faces: list[dict] = []
        returned: set[str] = set()
        last_commit = time.monotonic()

        def commit() -> None:
            nonlocal pending_videos, pending_faces, last_commit
            if not pending_videos:
                return
            lease.check()  # never write into an output another scan has taken over
            part = f"part-{scan_id}-{summary.parts:05d}"
            with stop.critical():
                store.commit(part, scan_date, pending_videos, pending_faces)
                summary.parts += 1
                info = CommitInfo(part=part, videos=len(pending_videos), faces=len(pending_faces),
                                  total_videos=summary.scanned)
                log.info("committed %s (%d videos, %d faces)", part, info.videos, info.faces)
                pending_videos, pending_faces = [], []
                last_commit = time.monotonic()
            if on_commit:
                on_commit(info)

        def count(rows: list[dict]) -> None:
            for row in rows:
                summary.scanned += 1
                label = row["label"]
                summary.failed += label == "ERROR"
                summary.no_face += label == "NO_FACE"
                summary.fakes += label == "FAKE"
                summary.reals += label == "REAL"
                if label == "ERROR":
                    kind = error_class(row.get("error"))
                    summary.errors[kind] = summary.errors.get(kind, 0) + 1
            summary.error_rate = round(summary.failed / summary.scanned, 4) if summary.scanned else 0.0

        def stream(entries: list[dict], bar: Any) -> Exception | None:
            """One Ray Data pass over ``entries``; returns what made Ray Data give up, if it did."""
            with _data_context(options):
                ds = build_dataset(entries, specs, plan, options)
                batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
                try:
                    for batch in batches:
                        videos, faces = rows_from_batch(batch, scan_id, datetime.now(timezone.utc))
                        videos = [v for v in videos if v["uri"] not in returned]  # never twice per run
                        returned.update(v["uri"] for v in videos)
                        uris = {v["uri"] for v in videos}
                        faces = [f for f in faces if f["uri"] in uris]
                        pending_videos.extend(videos)
                        pending_faces.extend(faces)
                        count(videos)
                        bar.update(len(videos))
                        bar.set_postfix(fakes=summary.fakes, failed=summary.failed, refresh=False)
                        if on_rows:
                            on_rows(summary.scanned, len(todo))
                        if (len(pending_videos) >= options.commit_every
                                or time.monotonic() - last_commit >= options.commit_seconds):
                            commit()
                except KeyboardInterrupt:  # Ctrl-C or SIGTERM (Terminated)
                    with stop.critical():
                        commit()  # finished rows are complete: keep them
                    raise
                except LeaseLost:
                    raise
                except Exception as exc:  # noqa: BLE001 - Ray Data gave up; keep what is done
                    return exc
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
                aborted = stream(remaining, bar)
                passes += 1
                remaining = [e for e in todo if e["uri"] not in returned]
        finally:
            bar.close()
        commit()
        if aborted is not None:
            summary.scan_s = round(time.perf_counter() - scan_start, 3)
            raise ScanAborted(
                f"the scan stopped after {summary.scanned} of {len(todo)} objects: "
                f"{type(aborted).__name__}: {str(aborted).splitlines()[0][:300]}. Committed results are kept; "
                "run the same command again to scan the rest.") from aborted
        lost = [e for e in todo if e["uri"] not in returned]
        if lost:
            message = (f"not scanned: the Ray worker processing this object failed {passes * (options.max_task_retries + 1)} "
                       "times (crash or out of memory; see the Ray logs); rerun with --retry-errors to try again")
            at = datetime.now(timezone.utc)
            rows = [error_row(e, message, scan_id, at, summary.model_version, verdict["threshold"],
                              verdict["aggregation"]) for e in lost]
            pending_videos.extend(rows)
            count(rows)
            summary.lost = len(rows)
            commit()
        summary.scan_s = round(time.perf_counter() - scan_start, 3)
        summary.videos_per_s = round(summary.scanned / summary.scan_s, 3) if summary.scan_s else 0.0
    finally:
        if started_ray:
            ray.shutdown()


__all__ = ["ScanOptions", "ScanSummary", "ScanError", "ScanAborted", "OutputError", "LeaseHeld", "LeaseLost",
           "Terminated", "ExitCode", "run_scan", "list_objects", "plan_pools", "storage_options_for", "DEFAULT_OUTPUT"]
