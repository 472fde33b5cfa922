"""Fault tolerance against a lost node, not just a killed actor: a scan on a local multi-node Ray cluster
(``ray.cluster_utils.Cluster``: several raylets on this machine) loses the worker node hosting most of its
actors right after its first commit, and still ends with exactly one row per object and nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.scan.output import OutputStore


DRIVER = Path(__file__).with_name("node_failure_driver.py")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_scan_survives_the_loss_of_a_worker_node(detector_env, samples_dir, tmp_path):
    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    names = [f"img{i:02d}.jpg" for i in range(10)]
    for i, name in enumerate(names):
        shutil.copy(samples_dir / ("astronaut.jpg" if i % 2 else "coffee.jpg"), source / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(DRIVER), str(source), str(out)], capture_output=True, text=True,
                          env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    summary, removed = result["summary"], result["removed"]
    assert removed and removed["cpus_in_use"] >= 1, result  # the node really hosted scan actors
    assert removed["committed_before"] < len(names)  # and it went while objects were still in flight
    assert result["alive_nodes"] == 3  # head + the two workers left
    assert (summary["scanned"], summary["lost"], summary["status"]) == (len(names), 0, "succeeded"), summary
    import pyarrow.parquet as pq

    parts = sorted(OutputStore(str(out)).list_parts("videos").values())
    rows = [row for part in parts for row in pq.read_table(part, columns=["uri", "label"]).to_pylist()]
    assert sorted(Path(r["uri"]).name for r in rows) == names  # exactly one row per object, none lost
    assert all(r["label"] in ("REAL", "FAKE", "NO_FACE") for r in rows), rows
