"""How the scan runs on Ray: the plan chosen from the cluster, its actor pools, Ray Data's context, and the
dataset that maps the graph (``pipeline.graph``) onto ``map_batches``.

Two plans, one graph:

- ``fused`` (no GPU): one actor pool, one actor per CPU with one torch thread, each running decode → detect →
  score → rows (``pipeline.graph.Graph``) for its objects, so no frame leaves its process;
- ``split`` (GPUs): CPU decode actors send the sampled frames (shrunk to the detector's working size with
  ``shrink_frames``) to detect actors, whose crops go to score actors; the model actors ask for a GPU share.

The pools are placed node by node (``jobs.scan.placement``): an actor asking a GPU share fits only a GPU node,
and on a cluster with CPU-only nodes the decode actors keep off the GPU nodes, whose CPUs the model actors need.

Either way the last actor builds the Parquet rows (``jobs.scan.rows.RowsStage``).
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from jobs.scan.config import ScanConfig
from jobs.scan.errors import ClusterBusyError
from jobs.scan.placement import NODE_ID_LABEL, Node, Pool, cpu_share, fit, gpu_share
from jobs.scan.ray_session import error_chain, ray_address
from pipeline.errors import DeviceUnavailableError, one_line

log = logging.getLogger(__name__)

MIN_ACTOR_CPUS = 0.01  # the least CPU share an actor is given: less free than that for each is a busy cluster


@dataclass
class PoolPlan:
    """Which plan, why, how many actors of each kind (0: not in this plan), and what each asks Ray for."""

    plan: str
    why: str
    fused_actors: int
    decode_actors: int
    detect_actors: int
    classify_actors: int
    cpus_per_actor: float
    detect_gpus: float  # also a fused actor's share: it runs the models
    classify_gpus: float
    torch_threads: int
    decode_off: list[str] = field(default_factory=list)  # GPU nodes' ids the decode actors keep off (none: anywhere)

    def at_most(self, objects: int) -> "PoolPlan":
        """No pool larger than the objects it will see: a spare actor still loads the models, holds its CPU or
        GPU share for nothing, and makes Ray Data warn (a rescan pass of one lost object met a pool of two)."""
        cap = max(1, objects)
        return replace(self, **{k: min(getattr(self, k), cap)
                                for k in ("fused_actors", "decode_actors", "detect_actors", "classify_actors")})

    def counts(self) -> tuple[int, int]:
        """(actors in all, model actors: those asking a GPU share)."""
        actors = self.fused_actors + self.decode_actors + self.detect_actors + self.classify_actors
        return actors, (self.fused_actors or self.detect_actors) + self.classify_actors

    def asks(self) -> dict[str, float]:
        """What the pools ask Ray for in all, by resource."""
        actors, models = self.counts()
        return {"CPU": actors * self.cpus_per_actor, "GPU": models * self.detect_gpus}

    def demand(self) -> str:
        """What the pools ask Ray for, in words (a refusal names it)."""
        actors, models = self.counts()
        gpus = f" and {models} model actor(s) {self.detect_gpus:g} GPU each" if self.detect_gpus else ""
        return f"{actors} actor(s) asking {self.cpus_per_actor:g} CPU each{gpus} ({_amounts(self.asks())} in all)"

    def line(self) -> str:
        """The one line the scan prints at start."""
        if self.plan == "fused":
            pools = f"{self.fused_actors} actors decode→detect→score"
        else:
            off = " (off the GPU nodes)" if self.decode_off else ""
            pools = f"{self.decode_actors} decode{off} → {self.detect_actors} detect → {self.classify_actors} score actors"
        gpus = f"; {self.detect_gpus:g} GPU per model actor" if self.detect_gpus else ""
        return (f"plan: {self.plan} ({self.why}): {pools}, {self.cpus_per_actor:g} CPU and "
                f"{self.torch_threads} torch thread(s) each{gpus}")


def choose_plan(cluster: dict[str, float], options: ScanConfig, device: str = "auto") -> tuple[str, str]:
    """(plan, why): ``options.plan`` unless auto, else split when the cluster has a GPU (and device is not cpu)."""
    if options.plan != "auto":
        return options.plan, "chosen"
    gpus = float(cluster.get("GPU", 0.0)) if device != "cpu" else 0.0
    return ("split", f"auto: {gpus:g} GPU in the cluster") if gpus >= 1 else ("fused", "auto: no GPU")


def check_gpus(cluster: dict[str, float], options: ScanConfig, device: str = "auto") -> None:
    """Refuse (``device_unavailable``) a GPU share the cluster cannot give, before any actor asks for it: Ray would
    keep the actors pending forever ("may hang forever") on a cluster with fewer GPUs than one actor's share; and
    ``device: cuda`` on a cluster without a GPU."""
    total = float(cluster.get("GPU", 0.0))
    share = options.gpus_per_actor or 0.0
    if share > total:
        raise DeviceUnavailableError(
            f"--gpus-per-actor {share:g} asks each model actor for more GPU than the Ray cluster has ({total:g}): "
            "its actors would never start; leave it out (or 0) on a cluster without GPUs")
    if device.startswith("cuda") and total < 1 and not share:
        raise DeviceUnavailableError(f"device {device!r} requested but the Ray cluster has no GPU")


def check_device(device: str, options: ScanConfig) -> None:
    """Refuse ``device: cuda`` before Ray starts, when this scan would start a local Ray (``ensure_ray``) on a machine
    without a CUDA GPU: ``device_unavailable``, as ``score`` says it (``resolve_device``). Joining a cluster, only
    its resources tell, once Ray is up (``check_gpus``)."""
    if not device.startswith("cuda") or ray_address(options):
        return
    import ray

    if not ray.is_initialized():
        from pipeline.config import resolve_device

        resolve_device(device)


def plan_pools(cluster: dict[str, float], options: ScanConfig, device: str = "auto",
               free: dict[str, float] | None = None, nodes: list[Node] | None = None) -> PoolPlan:
    """The plan and its actor pools, sized from the cluster's resources: its CPUs, or where ``free`` is given
    (``ray.available_resources()``) those free now, so a scan on a cluster that Serve shares asks only for what is
    left. The plan and the GPU shares follow the cluster's GPUs; the model actors' shares must be free too.
    Less free than one actor's worth is refused at once (``cluster_busy``): its actors would wait forever.

    Actors together ask for at most (CPUs - 1), so Ray Data always has a CPU left for its own tasks
    (on a 2-core machine, actor pools that hold every CPU starve the pipeline and it deadlocks).
    With GPUs (and device not cpu), model actors share them, decode actors stay on CPU.

    ``nodes`` (``jobs.scan.placement.nodes_now()``; None: one node with all of it) places the pools node by node.
    An actor asking a GPU share fits only a GPU node: the fused plan with GPUs is sized to the GPU nodes' CPUs,
    the model actors' share to what each GPU node holds. Where CPU-only nodes have room for them, the split plan's
    decode actors keep off the GPU nodes (``decode_off``), whose CPUs the model actors need. Every actor asks the
    same CPU share: the largest, at most 1, with which each pool fits the nodes it may use.
    """
    cpus = float(cluster.get("CPU", 1.0))
    if free is not None:
        cpus = min(cpus, float(free.get("CPU", 0.0)))
    check_gpus(cluster, options, device)
    gpus = float(cluster.get("GPU", 0.0)) if device != "cpu" else 0.0
    if nodes is None:
        nodes = [Node(None, cpus, float((cluster if free is None else free).get("GPU", 0.0)), bool(cluster.get("GPU")))]
    gpu_nodes = [n for n in nodes if n.gpu_node]
    cpu_nodes = [n for n in nodes if not n.gpu_node and n.cpus > 0]
    plan, why = choose_plan(cluster, options, device)
    fused = decode = detect = classify = 0
    share = options.gpus_per_actor or 0.0
    if plan == "fused":
        ignored = [f"--{name.replace('_', '-')}" for name in ("decode_actors", "detect_actors", "classify_actors")
                   if getattr(options, name) is not None] + (["--classify-batch"] if "classify_batch" in options.model_fields_set else [])
        if ignored:  # said, not silently dropped: they size the split plan's pools
            log.warning("%s: ignored by the fused plan (%s); --fused-actors sizes it, --plan split uses them",
                        ", ".join(ignored), why)
        on_gpus = bool(share) or gpus >= 1
        hosts = gpu_nodes if on_gpus else nodes
        fused = options.fused_actors or max(1, int(min(cpus, sum(n.cpus for n in hosts))))  # one per core, one torch thread each
        share = share or (min(1.0, gpus / fused) if on_gpus else 0.0)
        if on_gpus and cpu_nodes:
            log.warning("the fused plan with GPUs runs on the GPU nodes only (each actor asks a GPU share): the CPU-only "
                        "nodes' %g free CPUs stay idle; --plan split uses them, --device cpu runs it on every CPU",
                        sum(n.cpus for n in cpu_nodes))
        layouts = [[Pool("fused actors", fused, share, hosts)]]
    else:
        if gpus >= 1:
            model_actors = max(1, int(gpus))
            detect = options.detect_actors or model_actors
            classify = options.classify_actors or model_actors
            decode = options.decode_actors or max(1, min(int(cpus) - 1, 2 * (detect + classify)))
            share = share or min(1.0, gpus / (detect + classify))
        else:
            # Detect and classify cost about the same on CPU (measured, 1 thread: 40/56% of a video's time with the
            # 224 px classifier shipped since v4, 60/30% with v3's 160 px one; decode 4-10%): equal pools.
            detect = options.detect_actors or max(1, round(0.45 * cpus))
            classify = options.classify_actors or max(1, round(0.45 * cpus))
            decode = options.decode_actors or max(1, int(cpus) // 8)
        models = Pool("model actors", detect + classify, share, gpu_nodes if share else nodes)
        # decode on the CPU-only nodes, or (second choice) wherever Ray Data spreads it
        layouts = [[models, Pool("decode actors", decode, 0.0, hosts)]
                   for hosts in ([cpu_nodes] if share and cpu_nodes else []) + [nodes]]
    total = fused + decode + detect + classify
    budget = cpus - 1 if cpus >= 2 else cpus / 2
    if budget / total < MIN_ACTOR_CPUS:
        raise ClusterBusyError(f"too little CPU free for the scan's {total} actor(s) (at least {MIN_ACTOR_CPUS:g} CPU each, "
                               f"and some left for Ray Data's tasks): {_room(cluster, free)}")
    if share:
        models = layouts[0][0]
        share = gpu_share(models, may_shrink=not options.gpus_per_actor)
        if share is None:
            raise ClusterBusyError(f"too little GPU free for the scan's {models.count} {models.what} ({models.gpus:g} GPU "
                                   f"each): {_room(cluster, free)}")
        layouts = [[replace(pool, gpus=share) if pool.gpus else pool for pool in layout] for layout in layouts]
    # the first layout (decode off the GPU nodes) unless it costs every actor some of its CPU share
    shares = [cpu_share(layout, min(1.0, budget / total)) for layout in layouts]
    best = max((s for s in shares if s is not None), default=None)
    if best is None or best < MIN_ACTOR_CPUS:
        starved = next((p for p in layouts[-1] if fit(p.hosts, MIN_ACTOR_CPUS, p.gpus) < p.count), None)
        where = (f"{starved.count} {starved.what} on the {len(starved.hosts)} node(s) that can host them "
                 f"({sum(n.cpus for n in starved.hosts):g} CPU free there)" if starved else f"{total} actor(s) on its nodes")
        raise ClusterBusyError(f"too little CPU free for the scan's {where}: {_room(cluster, free)}")
    layout = layouts[shares.index(best)]
    decode_off = [n.id for n in gpu_nodes if n.id] if layout[-1].hosts is cpu_nodes and len(layouts) > 1 else []
    threads = options.torch_threads or (1 if plan == "fused" else max(1, int(best)))
    cpus_per_actor = math.floor(best * 1e4) / 1e4  # round down: the sum must stay under budget
    share = math.floor(share * 1e4 + 1e-6) / 1e4  # down too: 6 actors of 0.1667 GPU do not fit one GPU
    return PoolPlan(plan, why, fused, decode, detect, classify, cpus_per_actor, share, share, threads, decode_off)


def _amounts(amounts: dict[str, float]) -> str:
    """``{"CPU": 2, "GPU": 0.5}`` in words: "2 CPU, 0.5 GPU"."""
    return ", ".join(f"{round(v, 4):g} {k}" for k, v in amounts.items() if v) or "nothing"


def _room(cluster: dict[str, float], free: dict[str, float] | None = None, mine: dict[str, float] | None = None) -> str:
    """What the cluster has free of its CPUs and GPUs, in words (``free`` None: all of it), and who holds the rest:
    others' actors and tasks before the scan's pools start; once they have (``mine``: what the pools ask in all),
    only what exceeds the pools' whole ask is surely others'."""
    free = cluster if free is None else free
    keys = [k for k in ("CPU", "GPU") if cluster.get(k)]
    have = ", ".join(f"{float(free.get(k, 0.0)):g} of {float(cluster[k]):g} {k}" for k in keys) or "no CPU"
    held = {k: float(cluster[k]) - float(free.get(k, 0.0)) for k in keys}
    said = f"the Ray cluster has {have} free"
    if not any(v > 1e-9 for v in held.values()):
        return said
    if mine is None:
        return said + ", others' actors and tasks hold the rest (`ray status`): scan when they are done"
    others = {k: v - mine.get(k, 0.0) for k, v in held.items() if v - mine.get(k, 0.0) > 1e-4}
    if others:
        return said + (f", others' actors and tasks hold at least {_amounts(others)} of it (`ray status`): scan when "
                       "they are done")
    return said + (", and what is taken may all be the scan's own started actors: its pools do not fit the nodes "
                   "that can host them (`ray status` shows the rest pending)")


@contextmanager
def data_context(options: ScanConfig) -> Iterator[None]:
    """Ray Data settings for one scan (restored afterwards: the context is process-wide)."""
    from ray.data import DataContext
    from ray.data._internal.execution.interfaces.execution_options import ExecutionResources

    if not options.verbose:  # our own bar and summary say it; keep Ray Data's notices out of the way
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    saved = {"max_errored_blocks": ctx.max_errored_blocks, "enable_progress_bars": ctx.enable_progress_bars,
             "print_on_execution_start": ctx.print_on_execution_start, "wait_for_min_actors_s": ctx.wait_for_min_actors_s,
             "resource_limits": ctx.execution_options.resource_limits,
             "issue_detectors": list(ctx.issue_detectors_config.detectors)}
    # a crash also fails the batches queued behind it on its actor: the budget counts crashing objects
    ctx.max_errored_blocks = options.max_failed_batches * options.tasks_per_actor
    ctx.enable_progress_bars = options.ray_progress
    ctx.print_on_execution_start = options.verbose
    ctx.wait_for_min_actors_s = options.actor_start_timeout  # Ray Data's default, -1, waits forever
    if not options.verbose:  # its advice ("set memory= per worker") is about Ray's API, not the scan's options
        ctx.issue_detectors_config.detectors = []
    if options.object_store_limit:
        ctx.execution_options.resource_limits = ExecutionResources.for_limits(object_store_memory=options.object_store_limit)
    said = logging.getLogger("ray.data.exceptions")
    said.addFilter(_no_busy_trace)
    try:
        yield
    finally:
        said.removeFilter(_no_busy_trace)
        ctx.execution_options.resource_limits = saved.pop("resource_limits")
        ctx.issue_detectors_config.detectors = saved.pop("issue_detectors")
        for key, value in saved.items():
            setattr(ctx, key, value)


def _pools_timed_out(exc: BaseException | None) -> bool:
    """Whether ``exc`` is Ray Data giving up on a pool whose actors did not start within ``actor_start_timeout``."""
    import ray

    return any(isinstance(e, ray.exceptions.GetTimeoutError) and "starting actors" in str(e) for e in error_chain(exc))


def _no_busy_trace(record: logging.LogRecord) -> bool:
    """Ray Data logs that timeout as its own fault ("open an issue", a page of trace) while raising it, which
    ``not_started`` says in one line: dropped. Its first line carries no exception, hence ``sys.exc_info``."""
    return not _pools_timed_out(record.exc_info[1] if record.exc_info else sys.exc_info()[1])


def not_started(exc: BaseException, plan: PoolPlan, options: ScanConfig) -> ClusterBusyError | None:
    """``cluster_busy`` when ``exc`` is Ray Data giving up on a pool whose actors did not start within
    ``actor_start_timeout`` (``data_context``), naming what they ask for and what the cluster has free now."""
    import ray

    if not _pools_timed_out(exc):
        return None
    try:
        now = _room(ray.cluster_resources(), ray.available_resources(), plan.asks())
    except Exception as error:  # noqa: BLE001 - the refusal matters more than the numbers
        now = f"what the Ray cluster has free is unknown ({one_line(error)})"
    return ClusterBusyError(f"the scan's actors did not start within {options.actor_start_timeout} s "
                            f"(scan.actor_start_timeout): its pools ask for {plan.demand()}; {now}")


def build_dataset(entries: list[dict[str, Any]], specs: list, plan: PoolPlan, options: ScanConfig, scan_id: str,
                  scoring_key: str | None = None):
    """The Ray Data graph over ``entries`` (not executed until iterated)."""
    import ray

    entries = work_order(entries)
    plan = plan.at_most(len(entries))
    pools = [plan.fused_actors, plan.decode_actors, plan.detect_actors, plan.classify_actors]
    if len(entries) < max(pools) * options.tasks_per_actor:
        # too few objects to queue two on every actor: the first actor up would take them all while the
        # others finish starting (2 videos on 2 cores: one actor scored both, the other none)
        options = options.model_copy(update={"tasks_per_actor": 1})
    ds = ray.data.from_items(entries, override_num_blocks=max(1, min(len(entries), 4096)))
    return map_plan(ds, specs, plan, options, scan_id, scoring_key)


def work_order(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Largest objects first (stable for equal sizes). Bytes stand in for work: the long videos start
    early and the short ones fill the end, so no actor is left with a big one while the others idle
    (longest-processing-time-first scheduling). Which objects a capped run takes is decided before this."""
    return sorted(entries, key=lambda entry: -(entry.get("size") or 0))


def _pool(size: int, in_flight: int = 1):
    """A fixed pool whose actors hold ``in_flight`` batches at a time. With 2 the next batch is already on the
    actor when one ends (no dispatch gap), but an innocent batch queued behind a crashing one shares its
    crashes; the driver's rescan passes therefore run with 1 (``jobs/scan/driver.py``)."""
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=in_flight)


def map_plan(ds, specs: list, plan: PoolPlan, options: ScanConfig, scan_id: str, scoring_key: str | None = None):
    """``specs`` (the graph's, decode → detect → score) and the rows stage mapped onto ``ds`` as ``plan``
    says: a callable class per pool, the way Ray's batch-inference examples map a model. The rows carry
    ``scan_id`` and ``scoring_key``."""
    from jobs.scan.rows import RowsStage
    from pipeline.graph import Graph, StageSpec

    rows = StageSpec("rows", RowsStage, {"scan_id": scan_id, "scoring_key": scoring_key})
    if plan.plan == "fused":
        pools = [(specs + [rows], plan.fused_actors, options.decode_batch, plan.detect_gpus, None)]
    else:
        decode, detect, score = specs
        # Ray Data spreads a pool's actors over the nodes (its default strategy, SPREAD): the node-id label
        # keeps the decode actors off the GPU nodes, whose CPUs the model actors need
        off = {NODE_ID_LABEL: f"!in({','.join(plan.decode_off)})"} if plan.decode_off else None
        pools = [([decode], plan.decode_actors, options.decode_batch, 0.0, off),
                 ([detect], plan.detect_actors, options.decode_batch, plan.detect_gpus, None),
                 ([score, rows], plan.classify_actors, options.classify_batch, plan.classify_gpus, None)]
    # Ray 2.60 has no named map_batches parameter for actor restarts / task retries, only the
    # deprecated **ray_remote_args (removed in 2.64: revisit then). Ray Data's own defaults are
    # infinite restarts *and* infinite retries, so an object that crashes its worker every time would
    # stall the scan forever; we keep restarts unlimited and bound the retries of each batch.
    fault = {"max_restarts": options.max_restarts, "max_task_retries": options.max_task_retries}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated", category=DeprecationWarning)
        for stages, actors, batch, gpus, labels in pools:
            # every pool maps Graph over its stages: specs name their classes, so the driver never imports
            # torch, and each actor hands its freed frames back to the OS after every batch
            ds = ds.map_batches(Graph, fn_constructor_kwargs={"specs": stages}, batch_size=batch, compute=_pool(actors, options.tasks_per_actor),
                                num_gpus=gpus or None, num_cpus=plan.cpus_per_actor, label_selector=labels,
                                batch_format="numpy", **fault)
    return ds
