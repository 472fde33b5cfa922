"""Sizing Ray work from the cluster's real resources (a 2-CPU machine must not deadlock)."""

from __future__ import annotations


def model_actor_resources(max_actors: int | None = None) -> dict:
    """Actor count and per-actor resources for model stages.

    With GPUs: one actor per GPU, one GPU each. On CPU only: actors take half a CPU each and leave
    at least one CPU free, so Ray Data's read/decode tasks always have room to run (an actor pool that
    holds every CPU starves the reads: a measured deadlock on 2-CPU machines).
    """
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if gpus:
        actors = gpus
        return {"actors": min(actors, max_actors or actors), "num_cpus": 1, "num_gpus": 1}
    actors = max(1, int((cpus - 1) / 0.5))
    actors = min(actors, max(1, int(cpus)))
    return {"actors": min(actors, max_actors or actors), "num_cpus": 0.5, "num_gpus": 0}
