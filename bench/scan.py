"""Benchmark the batch scan: Ray Data scan vs a plain sequential loop over the same pipeline stages.

    .venv/bin/python bench/scan.py                                   # 8, 32, 64 videos; print the results
    .venv/bin/python bench/scan.py --write-docs docs/benchmarks.md    # and record them ("Batch scan")
    .venv/bin/python bench/scan.py --sizes 8 --detect-actors 2        # try another actor plan

For each size N the bench writes N videos to a temporary folder (copies of the bundled sample clips, or
of the videos in --media, cycled) and runs, each in a fresh child process:
- ``sequential``: one process, ``ScoringPipeline.run_batch`` (decode → detect → classify → aggregate)
  on one video at a time, torch's default threads — the plain loop;
- ``ray``: ``ray.init`` (all cores) then ``jobs.scan.run_scan`` folder → local Parquet, default actor plan
  unless flags say otherwise.
videos/s for the sequential loop counts model loading + the loop; for Ray it counts the scan itself
(actor start-up included, ``ray.init`` not: it is reported apart). Peak memory is the peak, sampled every
0.2 s, of the summed PSS (proportional set size: shared pages split between processes, so torch's
libraries and Ray's shared-memory object store are not counted once per process) over the child's whole
process tree: driver, GCS, raylet and every worker. Without an installed detector checkpoint the bench
uses an ImageNet-initialised one: same network and cost, meaningless verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))
sys.path.append(str(ROOT / "tests"))

from bench_common import checkpoint, write_section  # noqa: E402
from helpers import process_tree  # noqa: E402  (the /proc walker the tests use too)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SECTION = "## Batch scan"


# ------------------------------------------------------------------------------- memory sampling
def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return "?"
    if not words:
        return "?"
    return words[0] if words[0].startswith("ray::") else os.path.basename(words[0]) + (
        " " + os.path.basename(words[1]) if len(words) > 1 else "")


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory(threading.Thread):
    """Samples a process tree until stopped: peak summed PSS, and CPU time (user + system) of every process
    seen (its last sample: a process's final < 0.2 s may be missed)."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.peak_processes = pid, interval, 0, 0
        self.cpu: dict[int, float] = {}
        self.breakdown: list[tuple[str, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = process_tree(self.pid)
            sizes = {p: pss_bytes(p) for p in pids}
            total = sum(sizes.values())
            if total > self.peak:
                self.peak, self.peak_processes = total, len(pids)
                self.breakdown = sorted(((_title(p), size) for p, size in sizes.items()), key=lambda x: -x[1])
            for p in pids:
                seconds = cpu_seconds(p)
                if seconds is not None:
                    self.cpu[p] = max(seconds, self.cpu.get(p, 0.0))
            self._stop_event.wait(self.interval)

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# ------------------------------------------------------------------------------- children
def child_sequential(args) -> dict:
    from pipeline.batch import object_column
    from pipeline.config import load_settings
    from pipeline.graph import ScoringPipeline

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = load_settings(**{"decode.num_frames": args.frames})
    start = time.perf_counter()
    scorer = ScoringPipeline(settings)
    load_s = time.perf_counter() - start
    labels: dict[str, int] = {}
    for path in sorted(Path(args.dir).iterdir()):
        out = scorer.run_batch({"uri": object_column([str(path)])})
        labels[str(out["label"][0])] = labels.get(str(out["label"][0]), 0) + 1
    total_s = time.perf_counter() - start
    return {"load_s": load_s, "total_s": total_s, "loop_s": total_s - load_s, "labels": labels,
            "torch_threads": torch.get_num_threads()}


def child_ray(args) -> dict:
    import ray

    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    settings = load_settings(**{"decode.num_frames": args.frames})
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start
    options = ScanConfig(source=args.dir, output=args.out, progress=False, decode_actors=args.decode_actors,
                          detect_actors=args.detect_actors, classify_actors=args.classify_actors,
                          torch_threads=args.torch_threads, classify_batch=args.classify_batch,
                          object_store_limit=args.object_store_mb * 2**20 if args.object_store_mb else None)
    summary = run_scan(settings, options)
    total_s = time.perf_counter() - start
    ray.shutdown()
    return {"init_s": init_s, "scan_s": summary.scan_s, "total_s": total_s, "plan": summary.plan,
            "labels": {"FAKE": summary.fakes, "REAL": summary.reals, "NO_FACE": summary.no_face, "ERROR": summary.failed},
            "scanned": summary.scanned}


# ------------------------------------------------------------------------------- orchestration
def make_videos(folder: Path, count: int, media: Path | None) -> list[Path]:
    sources = sorted(media.glob("*.mp4")) if media else []
    sources = sources or [ROOT / "pipeline" / "samples" / "astronaut_zoom.mp4", ROOT / "pipeline" / "samples" / "pair_pan.mp4"]
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        source = sources[i % len(sources)]
        target = folder / f"v{i:03d}_{source.name}"
        shutil.copyfile(source, target)
        made.append(target)
    return made


def run_child(mode: str, args, folder: Path, out: Path, env: dict) -> dict:
    child = "ray" if mode == "ray" else "sequential"
    command = [sys.executable, __file__, "--child", child, "--dir", str(folder), "--out", str(out),
               "--frames", str(args.frames), "--classify-batch", str(args.classify_batch)]
    if mode == "sequential-1t":
        command += ["--threads", "1"]
    for flag in ("decode_actors", "detect_actors", "classify_actors", "torch_threads", "object_store_mb"):
        if getattr(args, flag):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = PeakMemory(process.pid)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{mode} child failed ({process.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(mode=mode, wall_s=time.perf_counter() - start, peak_pss_gib=sampler.peak / 2**30,
                  processes_at_peak=sampler.peak_processes, cpu_s=sampler.cpu_total,
                  peak_breakdown_mib=[(name, round(size / 2**20)) for name, size in sampler.breakdown[:10]])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per video (both modes)")
    parser.add_argument("--media", type=Path, help="folder of .mp4 videos to cycle instead of the bundled samples")
    parser.add_argument("--modes", nargs="+", default=["sequential", "sequential-1t", "ray"],
                        choices=["sequential", "sequential-1t", "ray"],
                        help="sequential: torch's default threads; sequential-1t: torch 1 thread (often faster on a busy machine)")
    parser.add_argument("--decode-actors", type=int)
    parser.add_argument("--detect-actors", type=int)
    parser.add_argument("--classify-actors", type=int)
    parser.add_argument("--torch-threads", type=int)
    parser.add_argument("--classify-batch", type=int, default=4)
    parser.add_argument("--object-store-mb", type=int, help="Ray Data object store budget for the scan (MiB)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--workdir", type=Path, help="where the temporary videos go (default: the system temp dir)")
    parser.add_argument("--write-docs", type=Path, help="update the 'Batch scan' section of this file")
    parser.add_argument("--child", choices=["sequential", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING)
        result = child_sequential(args) if args.child == "sequential" else child_ray(args)
        print(json.dumps(result))
        return

    workdir = Path(tempfile.mkdtemp(prefix="scan-bench-", dir=args.workdir))
    try:
        ckpt, ckpt_kind = checkpoint(workdir, "scan timing only")
        env = dict(os.environ, DFS_CLASSIFY__CHECKPOINT=str(ckpt))
        runs = []
        load_before = os.getloadavg()
        for size in args.sizes:
            folder = workdir / f"videos-{size}"
            make_videos(folder, size, args.media)
            for mode in args.modes:
                out = workdir / f"out-{size}-{mode}"
                result = run_child(mode, args, folder, out, env)
                result["videos"] = size
                if result["labels"].get("ERROR"):  # e.g. inputs deleted under us: the timing would be a lie
                    raise RuntimeError(f"{mode} run on {size} videos had ERROR rows: {result['labels']}")
                result["videos_per_s"] = size / (result["scan_s"] if mode == "ray" else result["total_s"])
                result["cpu_s_per_video"] = result["cpu_s"] / size
                result["cores_used"] = result["cpu_s"] / result["wall_s"]
                runs.append(result)
                print(json.dumps(result), flush=True)
                shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
        report = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                       f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, no GPU used",
            "checkpoint": ckpt_kind, "frames": args.frames, "media": str(args.media) if args.media else "bundled samples",
            "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
            "runs": runs,
        }
        print()
        print(render(report))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        if args.write_docs:
            write_section(args.write_docs, SECTION, render(report))
            print(f"wrote {SECTION!r} in {args.write_docs}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def render(r: dict) -> str:
    by = {(run["videos"], run["mode"]): run for run in r["runs"]}
    sizes = sorted({run["videos"] for run in r["runs"]})
    plan = next((run["plan"] for run in r["runs"] if run["mode"] == "ray"), {})
    threads = next((run["torch_threads"] for run in r["runs"] if run["mode"] == "sequential"), "?")
    lines = [
        SECTION,
        "",
        f"Measured by `bench/scan.py` on {time.strftime('%Y-%m-%d')}: {r['machine']}; load average before/after "
        f"{r['load_average']['before'][0]}/{r['load_average']['after'][0]} (shared machine: other work ran too). "
        f"{r['frames']} frames per video; media: {r['media']}"
        + (" (astronaut_zoom.mp4 480x360 4 s and pair_pan.mp4 640x320 3 s, cycled)" if r["media"] == "bundled samples"
           else " (cycled)") + f"; checkpoint: {r['checkpoint']}.",
        "",
        f"- **seq**: one process, `ScoringPipeline.run_batch` per video, torch's default {threads} threads; "
        "**seq 1t**: the same with 1 torch thread. Time = model load + loop.",
        f"- **ray**: `jobs.scan.run_scan` folder → local Parquet; default actor plan {plan.get('decode_actors')} decode / "
        f"{plan.get('detect_actors')} detect / {plan.get('classify_actors')} classify, {plan.get('cpus_per_actor')} "
        f"CPU and {plan.get('torch_threads')} torch thread(s) each; time = the scan (actor start-up included, "
        "`ray.init` excluded and shown apart).",
        "- speed-up: ray videos/s over the *faster* of the two sequential loops.",
        "- peak memory: summed PSS of the whole process tree (driver, GCS, raylet, workers), sampled every 0.2 s.",
        "",
        "- CPU s/video: user + system CPU time of the whole process tree (start-up, imports and Ray's own"
        " processes included) per video; it does not depend on what else the machine runs, videos/s does.",
        "",
        "| videos | seq videos/s | seq 1t videos/s | ray videos/s | speed-up | seq peak GiB | ray peak GiB "
        "| CPU s/video seq / 1t / ray | ray.init s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(run, key, fmt):
        return format(run[key], fmt) if run else "-"

    for size in sizes:
        seq, seq1, ray_run = by.get((size, "sequential")), by.get((size, "sequential-1t")), by.get((size, "ray"))
        best = max((x["videos_per_s"] for x in (seq, seq1) if x), default=None)
        speed = f"{ray_run['videos_per_s'] / best:.2f}x" if best and ray_run else "-"
        seq_peak = max((x["peak_pss_gib"] for x in (seq, seq1) if x), default=None)
        lines.append(f"| {size} | {cell(seq, 'videos_per_s', '.3f')} | {cell(seq1, 'videos_per_s', '.3f')} | "
                     f"{cell(ray_run, 'videos_per_s', '.3f')} | {speed} | "
                     f"{'-' if seq_peak is None else format(seq_peak, '.2f')} | {cell(ray_run, 'peak_pss_gib', '.2f')} | "
                     f"{' / '.join(format(x['cpu_s_per_video'], '.2f') if x and 'cpu_s_per_video' in x else '-' for x in (seq, seq1, ray_run))} | "
                     f"{cell(ray_run, 'init_s', '.1f')} |")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
