"""bench/serve_load.py: its section says the sizes it ran with, and it leaves no temporary folder behind."""

import sys
import tempfile

import pytest

from helpers import load_bench


def _results(uploads, upload_mib, factor, smoke):
    statuses = {"n": 1, "p50_s": 0.1, "p95_s": 0.1, "max_s": 0.1}
    return {"machine": "test", "checkpoint": "c", "command": "bench/serve_load.py --smoke", "smoke": smoke,
            "settings": {"max_inflight": 2, "max_queued": 2, "ingress_replicas": 1, "spool_memory_mib": 1.0,
                         "request_timeout_s": 60, "num_frames": 4},
            "memory": {"uploads": uploads, "upload_mib": upload_mib, "seconds": 1.0, "statuses": {415: uploads},
                       "before_mib": {"RssAnon": 100.0, "VmRSS": 200.0, "RssShmem": 1.0},
                       "peak_growth_mib": {"RssAnon": 8.0, "VmRSS": 9.0, "RssShmem": 0.0},
                       "after_growth_mib": {"RssAnon": 1.0, "VmRSS": 1.0, "RssShmem": 0.0}},
            "overload": {"requests": 12, "capacity": 4, "seconds": 2.0, "retry_after": ["1"], "by_status": {200: statuses}},
            "load_average": {"before": [0.5], "after": [1.0]}, "media": "pair_pan.mp4",
            "media_path": "pipeline/samples/pair_pan.mp4", "factor": factor}


def test_the_section_describes_the_run_it_measured():
    load = load_bench("serve_load")
    smoke = load.render(_results(2, 4, 3.0, True))
    assert "under 2 concurrent uploads of 4 MiB" in smoke and "at 3x its" in smoke and "99 MiB" not in smoke
    assert "Measured by `bench/serve_load.py --smoke` on" in smoke
    full = load.render(_results(8, 99, 2.0, False))
    assert "under 8 concurrent uploads of 99 MiB" in full and "at 2x its" in full
    assert "`pipeline/samples/pair_pan.mp4`" in full


def test_the_temporary_folder_goes_when_the_run_fails(monkeypatch, tmp_path):
    import ray

    def no_ray(*args, **kwargs):
        raise RuntimeError("Ray would not start")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(ray, "init", no_ray)  # a failure part-way, after the folder was made
    monkeypatch.setattr(sys, "argv", ["bench/serve_load.py", "--smoke"])
    with pytest.raises(RuntimeError, match="would not start"):
        load_bench("serve_load").main()
    assert list(tmp_path.iterdir()) == []
