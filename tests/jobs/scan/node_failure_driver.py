"""Driver for ``test_node_failure.py`` (its own process: a Ray connection is per process).

Starts a local multi-node Ray cluster (a head that runs no actors and three 2-CPU worker raylets on this
machine), scans SOURCE into OUTPUT on it, and at the first commit removes (kills) the worker node that
hosts the most scan actors. Prints one JSON line: the summary and what was removed.
"""

from __future__ import annotations

import json
import sys
import time


def main(source: str, output: str) -> None:
    import ray
    from ray._private.state import available_resources_per_node
    from ray.cluster_utils import Cluster

    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(3)]
    cluster.wait_for_nodes()
    removed: dict = {}

    def remove_busiest_worker(info) -> None:
        if removed:
            return
        free = available_resources_per_node()
        busiest = min(workers, key=lambda node: free.get(node.node_id, {}).get("CPU", 2.0))
        removed.update(node_id=busiest.node_id, cpus_in_use=2.0 - free.get(busiest.node_id, {}).get("CPU", 2.0),
                       committed_before=info.total_videos)
        cluster.remove_node(busiest, allow_graceful=False)

    try:
        # the CPU plan (fused), three actors of 1 CPU: they fit on the two workers left after the removal
        options = ScanConfig(source=source, output=output, progress=False, commit_every=1, classify_batch=1,
                              plan="fused", fused_actors=3, max_task_retries=3)
        summary = run_scan(load_settings(), options, on_commit=remove_busiest_worker)
        # the (fast) fused scan can end before the GCS has declared the killed raylet dead: give it time
        deadline = time.monotonic() + 60
        while (alive := sum(1 for node in ray.nodes() if node["Alive"])) > 3 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps({"summary": summary.to_dict(), "removed": removed, "alive_nodes": alive}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
