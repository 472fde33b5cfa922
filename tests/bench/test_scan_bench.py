"""bench/scan.py's report: the GPU columns appear only when a run has GPU samples, and the summary is what was sampled;
it says the whole command that measured it; the media default follows DFS_SHARED_DATA."""

from helpers import ROOT, load_bench


def _run(mode, videos, per_s, gpu=None):
    return {"mode": mode, "videos": videos, "videos_per_s": per_s, "cpu_s_per_video": 1.0, "cores_used": 1.0,
            "peak_rss_gib": 2.0, "peak_pss_gib": 1.5, "plan_line": None, **({"gpu": gpu} if gpu else {})}


def _report(runs):
    return {"date": "2026-12-04", "machine": "test", "load_average": {"before": 0, "after": 0}, "frames": 32,
            "media": "m", "checkpoint": "c", "command": "bench/scan.py 32", "runs": runs}


def test_gpu_summary_is_what_was_sampled():
    scan = load_bench("scan")
    sampler = scan.GpuSampler()
    sampler.util, sampler.peak_mem = [0.0, 20.0, 60.0, 0.0], 3 * 2**30
    gpu = sampler.summary()["gpu"]
    assert gpu["util_mean_pct"] == 20.0 and gpu["util_busy_mean_pct"] == 40.0 and gpu["util_peak_pct"] == 60.0
    assert gpu["busy_share"] == 0.5 and gpu["peak_mem_gib"] == 3.0
    sampler.util = []
    assert sampler.summary() == {}  # no GPU: no GPU numbers, not zeros


def test_render_adds_gpu_columns_only_with_gpu_runs():
    scan = load_bench("scan")
    cpu_only = scan.render(_report([_run("loop-2t", 32, 0.5), _run("fused", 32, 0.6)]))
    assert "GPU util" not in cpu_only and "| 32 | fused | 0.600 | 1.20x |" in cpu_only
    gpu = {"util_mean_pct": 5.2, "util_busy_mean_pct": 12.9, "util_peak_pct": 34.0, "peak_mem_gib": 2.94}
    with_gpu = scan.render(_report([_run("loop-2t", 32, 0.5), _run("split", 32, 1.0, gpu)]))
    assert "GPU util % mean / busy / peak" in with_gpu
    assert "| 32 | split | 1.000 | 2.00x | 1.00 | 1.00 | 2.00 | 1.50 | 5 / 13 / 34 | 2.9 |" in with_gpu
    assert "| 32 | loop-2t | 0.500 | 1.00x | 1.00 | 1.00 | 2.00 | 1.50 | - | - |" in with_gpu


def test_tree_sampler_reads_pss_only_every_nth_sample(monkeypatch):
    """PSS walks every page table (86 ms per sample for a scan's 13 processes): read it on every Nth sample so the
    bench does not take a share of a core from the command it measures; RSS and CPU every sample."""
    import os
    import time

    scan = load_bench("scan")
    calls = []
    monkeypatch.setattr(scan, "_pss", lambda pid: calls.append(pid) or 1)
    sampler = scan.TreeSampler(os.getpid(), interval=0.01, pss_every=3)
    sampler.start()
    time.sleep(0.3)
    sampler.stop()
    samples = len(sampler.samples)
    assert samples >= 6 and len(calls) == -(-samples // 3)  # the 1st, 4th, 7th... sample
    assert sampler.peak_rss > 0 and sampler.peak_pss == 1


def test_measured_by_names_every_flag_of_the_run():
    scan = load_bench("scan")
    command = "bench/scan.py 4 --frames 4 --scan-args '--fused-actors 2' --sample-every 0.5"
    table = scan.render({**_report([_run("fused", 4, 0.5)]), "command": command})
    assert f"Measured by `{command}` on 2026-12-04" in table


def test_default_media_follows_dfs_shared_data(monkeypatch, tmp_path):
    (tmp_path / "ffpp-c23" / "original").mkdir(parents=True)
    (tmp_path / "ffpp-c23" / "original" / "000.mp4").symlink_to(ROOT / "pipeline" / "samples" / "pair_pan.mp4")
    monkeypatch.setenv("DFS_SHARED_DATA", str(tmp_path))
    assert load_bench("scan").DEFAULT_MEDIA == tmp_path / "ffpp-c23"
    monkeypatch.setenv("DFS_SHARED_DATA", str(tmp_path / "nothing-here"))  # no media there: the bundled clips
    assert load_bench("scan").DEFAULT_MEDIA == ROOT / "pipeline" / "samples"
