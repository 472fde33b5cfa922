"""Where the scan's actors fit: the Ray cluster node by node (``nodes_now``), and the largest shares with which a
pool of like actors fits the nodes it may use (``cpu_share``, ``gpu_share``). ``jobs.scan.plan.plan_pools`` sizes
its pools with them: a 0-CPU head, CPU workers and GPU workers with few CPUs are not one heap of CPUs, and an
actor asking a GPU share fits only a GPU node."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

NODE_ID_LABEL = "ray.io/node-id"  # the label Ray gives every node: its id


@dataclass(frozen=True)
class Node:
    """A live Ray node as the plan sees it: the CPUs and GPUs free on it and whether it has GPUs at all (one whose
    GPUs others hold is still a GPU node). ``id``: Ray's node id, None for a node that stands for a whole cluster."""

    id: str | None
    cpus: float
    gpus: float = 0.0
    gpu_node: bool = False


@dataclass(frozen=True)
class Pool:
    """Like actors: how many, the GPU share each asks, and the nodes Ray may place them on."""

    what: str
    count: int
    gpus: float
    hosts: list[Node]


def nodes_now() -> list[Node] | None:
    """Every live node of the Ray cluster with what is free on it now; None (the plan then takes the cluster as one
    node, as before) where Ray cannot say."""
    try:  # Ray's DeveloperAPI (ray.util.tpu reads it so): ray.available_resources() per node, by hex node id
        from ray._private.state import available_resources_per_node, total_resources_per_node

        free = available_resources_per_node()
        return [Node(node, float(free.get(node, {}).get("CPU", 0.0)), float(free.get(node, {}).get("GPU", 0.0)),
                     float(total.get("GPU", 0.0)) > 0) for node, total in sorted(total_resources_per_node().items())]
    except Exception as exc:  # noqa: BLE001 - a private module that a Ray upgrade may move: plan as before
        log.warning("cannot read the Ray cluster node by node (%s): its pools are planned on its totals", exc)
        return None


def fit(hosts: list[Node], cpus: float, gpus: float = 0.0) -> int:
    """How many actors asking ``cpus`` CPU and ``gpus`` GPU each fit on ``hosts`` (0 of either: not counted)."""
    def each(node: Node) -> float:
        return min(math.floor(node.cpus / cpus + 1e-9) if cpus else math.inf,
                   math.floor(node.gpus / gpus + 1e-9) if gpus else math.inf)

    return int(min(sum(each(n) for n in hosts), 1 << 30))


def largest(ceiling: float, amounts: list[float], count: int, fits: Callable[[float], bool]) -> float | None:
    """The largest share, at most ``ceiling``, that ``fits``: ``ceiling`` or one node's amount split ``k`` ways (a
    share in between fits no more actors). ``fits`` only holds more as the share shrinks: bisection."""
    candidates = sorted({ceiling, *(a / k for a in amounts for k in range(1, count + 1) if 0 < a / k < ceiling)},
                        reverse=True)
    low, high = 0, len(candidates)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(candidates[middle]) else (middle + 1, high)
    return candidates[low] if low < len(candidates) else None


def gpu_share(pool: Pool, may_shrink: bool) -> float | None:
    """``pool.gpus`` when every actor of the pool fits its GPU nodes with it, else (``may_shrink``: an automatic
    share) the largest smaller one that does, the GPUs free adding up to the pool's whole ask (two GPUs on two
    nodes: 3 actors of 0.5, not 0.6667); None when neither does."""
    def fits(share: float) -> bool:
        return fit(pool.hosts, 0.0, share) >= pool.count

    if sum(n.gpus for n in pool.hosts) < pool.count * pool.gpus - 1e-9:
        return None
    if fits(pool.gpus):
        return pool.gpus
    return largest(pool.gpus, [n.gpus for n in pool.hosts], pool.count, fits) if may_shrink else None


def cpu_share(pools: list[Pool], ceiling: float) -> float | None:
    """The largest CPU share for every actor, at most ``ceiling``, with which each pool fits the nodes it may use and
    all of them the nodes together; None when none does."""
    everywhere = list({id(n): n for pool in pools for n in pool.hosts}.values())
    total = sum(pool.count for pool in pools)

    def fits(share: float) -> bool:
        return (fit(everywhere, share) >= total
                and all(fit(pool.hosts, share, pool.gpus) >= pool.count for pool in pools))

    return largest(ceiling, [n.cpus for n in everywhere], total, fits)
