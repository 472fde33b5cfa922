"""Benchmark the batch scan against the plain loop a user would otherwise write, whole commands each time.

    .venv/bin/python bench/scan.py 32 128 512                    # N videos each; prints a table, writes JSON
    .venv/bin/python bench/scan.py 32 128 --write-docs docs/benchmarks.md
    .venv/bin/python bench/scan.py 4 --frames 4                  # smoke check (a minute or two)

For each N the bench makes a temporary folder of N symlinks to the FF++ videos of --media (default
../shared/data/ffpp-c23, or $DFS_SHARED_DATA/ffpp-c23, else the bundled clips; every .mp4 under it, sorted,
cycled to reach N) and runs, one after another, each as a fresh child process on those same files:

- ``loop-1t`` / ``loop-2t``: ``deepfakestream score FILE… --json`` with ``DFS_TORCH_THREADS`` 1 / 2 — the
  in-process graph, ``for f in files: score(f)``;
- ``fused`` / ``split``: ``deepfakestream scan DIR -o OUT --plan fused|split --json`` (a local Ray instance
  on every core, started by the command).

Every time is a whole command's wall time, interpreter start, imports, model loading, ``ray.init`` and actor
start-up included. The sampler (psutil, every --sample-every s, 1 by default) walks the child's process tree (driver, GCS,
raylet, Ray workers) for the peak of the summed RSS and (every --pss-every samples: it is the costly read) of the summed PSS (shared pages split between processes,
so torch's libraries and the object store count once), and for CPU seconds (user + system, each process's
last sample: a process's final second may be missed). Each run also records the peak RSS per role (driver,
actors, Ray's own processes) and in each quarter of the run: memory that climbs with the number of videos
climbs quarter by quarter, a one-off spike does not. The speed-up is each plan's videos/s over the faster
of the two loops. A run with ERROR rows stops the bench (its time would be a lie). Numbers are only worth
recording from a quiet machine: the load average before and after is recorded with them, and --write-docs
is refused (exit 2, ``machine_busy``) when the 1-minute load is above --max-load before the first run.
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

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

from bench_common import add_docs_flags, checkpoint, command_line, quiet_load, shared_data, write_section  # noqa: E402

SECTION = "## Batch scan"
MODES = ("loop-1t", "loop-2t", "fused", "split")
# FF++'s 720p videos where ../shared is; else the bundled clips, so `make bench` runs on a fresh clone
DEFAULT_MEDIA = next((p for p in (shared_data() / "ffpp-c23", ROOT / "pipeline" / "samples")
                      if any(p.rglob("*.mp4"))), ROOT / "pipeline" / "samples")


class GpuSampler:
    """Utilisation and used memory of the visible NVIDIA GPUs through NVML (nvidia-ml-py), or nothing where
    there is no GPU or no NVML: the bench then reports CPU numbers only."""

    def __init__(self):
        self.handles, self.nvml = [], None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - no driver, no library, no device: all mean "no GPU numbers"
            self.handles = []
            import torch

            if torch.cuda.is_available():  # a GPU the bench cannot watch: said, not silently left out
                print(f"GPU columns left out: NVML is not usable ({type(exc).__name__}: {exc}); "
                      "`.venv/bin/pip install nvidia-ml-py` adds them", file=sys.stderr)
        self.util: list[float] = []  # per sample, mean over the GPUs (%)
        self.peak_mem = 0

    def names(self) -> list[str]:
        return [str(self.nvml.nvmlDeviceGetName(h)) for h in self.handles] if self.handles else []

    def sample(self) -> None:
        if not self.handles:
            return
        try:
            rates = [self.nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self.handles]
            used = sum(self.nvml.nvmlDeviceGetMemoryInfo(h).used for h in self.handles)
        except Exception:  # noqa: BLE001 - a failed read loses one sample, not the run
            return
        self.util.append(sum(rates) / len(rates))
        self.peak_mem = max(self.peak_mem, used)

    def summary(self) -> dict:
        """Mean and peak utilisation over the whole command (start-up included, like its time), the mean over
        the samples where the GPU was busy at all, and peak used memory (every process on the GPU)."""
        if not self.util:
            return {}
        busy = [u for u in self.util if u > 0]
        return {"gpu": {"util_mean_pct": round(sum(self.util) / len(self.util), 1), "util_peak_pct": max(self.util),
                        "util_busy_mean_pct": round(sum(busy) / len(busy), 1) if busy else 0.0,
                        "busy_share": round(len(busy) / len(self.util), 3), "samples": len(self.util),
                        "peak_mem_gib": round(self.peak_mem / 2**30, 2)}}


class TreeSampler(threading.Thread):
    """Peak summed RSS and PSS, and CPU seconds, of a process and all its descendants, until stopped."""

    def __init__(self, pid: int, interval: float = 0.2, pss_every: int = 1):
        super().__init__(daemon=True)
        self.root, self.interval, self.pss_every = psutil.Process(pid), interval, pss_every
        self.peak_rss = self.peak_pss = self.peak_processes = 0
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, create time) → CPU seconds
        self.roles: dict[int, str] = {}
        self.samples: list[tuple[float, int, dict[str, int]]] = []  # (time, summed RSS, RSS per role)
        self.gpu = GpuSampler()
        self._done = threading.Event()

    def role(self, proc: psutil.Process) -> str:
        """driver (the command), actors (the scan's model actors), ray (GCS, raylet, Ray's own workers)."""
        if proc.pid not in self.roles:
            cmdline = " ".join(proc.cmdline())
            role = ("driver" if proc.pid == self.root.pid else
                    "actors" if "MapWorker" in cmdline or "MapWorker" in proc.name() else "ray")
            if role != "ray":  # a Ray worker starts as default_worker.py and takes its actor's title later
                self.roles[proc.pid] = role
            return role
        return self.roles[proc.pid]

    def run(self) -> None:
        count = 0
        while not self._done.is_set():
            with_pss = count % self.pss_every == 0  # PSS walks every page table: the costly read
            count += 1
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            rss = pss = 0
            by_role: dict[str, int] = {}
            for proc in procs:
                try:
                    with proc.oneshot():
                        size = proc.memory_info().rss
                        rss += size
                        role = self.role(proc)
                        by_role[role] = by_role.get(role, 0) + size
                        times = proc.cpu_times()
                        self.cpu[(proc.pid, proc.create_time())] = times.user + times.system
                    pss += _pss(proc.pid) if with_pss else 0
                except psutil.Error:
                    continue
            if rss > self.peak_rss:
                self.peak_rss, self.peak_processes = rss, len(procs)
            self.peak_pss = max(self.peak_pss, pss)
            self.samples.append((time.monotonic(), rss, by_role))
            self.gpu.sample()
            self._done.wait(self.interval)

    def memory_profile(self) -> dict:
        """Peak RSS per role, and the peak summed RSS of each quarter of the run: a leak climbs quarter by
        quarter, while a one-off spike (one heavy video) does not."""
        if not self.samples:
            return {}
        start, end = self.samples[0][0], self.samples[-1][0]
        quarters = [0, 0, 0, 0]
        for t, rss, _ in self.samples:
            q = min(3, int(4 * (t - start) / max(end - start, 1e-9)))
            quarters[q] = max(quarters[q], rss)
        roles = sorted({r for _, _, by in self.samples for r in by})
        return {"peak_rss_gib_by_role": {r: round(max(by.get(r, 0) for _, _, by in self.samples) / 2**30, 3) for r in roles},
                "peak_rss_gib_by_quarter": [round(q / 2**30, 3) for q in quarters]}

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per role; a pid never titled as an actor was one of Ray's own."""
        by: dict[str, float] = {}
        for (pid, _), seconds in self.cpu.items():
            role = self.roles.get(pid, "ray")
            by[role] = by.get(role, 0.0) + seconds
        return {role: round(seconds, 1) for role, seconds in by.items()}

    def stop(self) -> None:
        self._done.set()
        self.join()


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            return next((int(line.split()[1]) * 1024 for line in handle if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def make_inputs(folder: Path, count: int, media: Path) -> list[Path]:
    """``count`` symlinks to the videos under ``media``, cycled (distinct names: the scan sees distinct objects)."""
    sources = sorted(media.rglob("*.mp4"))
    if not sources:
        raise SystemExit(f"no .mp4 under {media}")
    folder.mkdir(parents=True)
    links = []
    for i in range(count):
        link = folder / f"v{i:05d}_{sources[i % len(sources)].name}"
        link.symlink_to(sources[i % len(sources)].resolve())
        links.append(link)
    return links


def command_for(mode: str, files: list[Path], folder: Path, out: Path, args) -> tuple[list[str], dict]:
    cli = [sys.executable, "-m", "jobs.cli"]
    if mode.startswith("loop"):
        threads = mode.removeprefix("loop-").removesuffix("t")
        return [*cli, "score", *map(str, files), "--json", "--frames", str(args.frames)], {"DFS_TORCH_THREADS": threads}
    return [*cli, "scan", str(folder), "-o", str(out), "--plan", mode, "--frames", str(args.frames), "--no-progress",
            "--json", *args.scan_args.split()], {}


def labels_of(mode: str, stdout: str) -> dict[str, int]:
    if mode.startswith("loop"):
        labels: dict[str, int] = {}
        for line in stdout.splitlines():
            if line.startswith("{"):
                label = json.loads(line)["label"]
                labels[label] = labels.get(label, 0) + 1
        return labels
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {"FAKE": summary["fakes"], "REAL": summary["reals"], "NO_FACE": summary["no_face"], "ERROR": summary["failed"]}


def parse_sizes(sizes: list[str], default_modes: list[str]) -> list[tuple[int, list[str]]]:
    """``["32", "512:fused"]`` → ``[(32, default_modes), (512, ["fused"])]``; unknown modes are refused."""
    parsed = []
    for item in sizes:
        size, _, modes = item.partition(":")
        chosen = modes.split(",") if modes else list(default_modes)
        unknown = [m for m in chosen if m not in MODES]
        if unknown or not size.isdigit() or int(size) < 1:
            raise SystemExit(f"bad size {item!r}: want N or N:mode,mode with modes from {', '.join(MODES)}")
        parsed.append((int(size), chosen))
    return parsed


def run_one(mode: str, files: list[Path], folder: Path, workdir: Path, args, env: dict) -> dict:
    out = workdir / f"out-{len(files)}-{mode}"
    command, extra = command_for(mode, files, folder, out, args)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env={**env, **extra}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid, args.sample_every, args.pss_every)
    own = time.process_time()
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    sampler.stop()
    sampler_cpu = time.process_time() - own  # the sampler competes for the same cores: say how much it took
    shutil.rmtree(out, ignore_errors=True)
    labels = labels_of(mode, stdout) if stdout.strip() else {}
    if process.returncode != 0 or sum(labels.values()) != len(files) or labels.get("ERROR"):
        raise RuntimeError(f"{mode} on {len(files)} videos: exit {process.returncode}, labels {labels}\n{stderr[-3000:]}")
    plan = next((line for line in stderr.splitlines() if line.startswith("plan: ")), None)
    cpu = sum(sampler.cpu.values())
    return {"mode": mode, "videos": len(files), "wall_s": round(wall, 2), "videos_per_s": round(len(files) / wall, 4),
            "cpu_s": round(cpu, 1), "sampler_cpu_s": round(sampler_cpu, 1), "cpu_s_per_video": round(cpu / len(files), 3), "cores_used": round(cpu / wall, 2),
            "cpu_s_by_role": sampler.cpu_by_role(),
            "peak_rss_gib": round(sampler.peak_rss / 2**30, 3), "peak_pss_gib": round(sampler.peak_pss / 2**30, 3),
            "processes_at_peak": sampler.peak_processes, **sampler.memory_profile(), **sampler.gpu.summary(), "labels": labels, "plan_line": plan,
            "command": " ".join(["deepfakestream", *command[3:]]).replace(" ".join(map(str, files)), "FILE…")}


def render(report: dict) -> str:
    runs = report["runs"]
    by = {(r["videos"], r["mode"]): r for r in runs}
    sizes = sorted({r["videos"] for r in runs})
    lines = [
        SECTION, "",
        f"Measured by `{report['command']}` on {report['date']}: {report['machine']}; load "
        f"average before/after {report['load_average']['before']}/{report['load_average']['after']}. "
        f"{report['frames']} frames per video; media: {report['media']} (cycled); checkpoint: {report['checkpoint']}.",
        "",
        "Whole commands, start-up included (interpreter, imports, model load, `ray.init`, actors): **loop 1t/2t** "
        "= `deepfakestream score FILE… --json` with 1/2 torch threads; **fused/split** = `deepfakestream scan DIR "
        "--plan fused|split`. Speed-up: videos/s over the faster loop. Memory: peak summed RSS (and PSS) of the "
        "command's process tree; CPU s/video: user + system of that tree.",
        "",
    ]
    gpu = any("gpu" in r for r in runs)
    if gpu:
        lines += ["GPU: NVML every sample, whole command: mean utilisation over the run (start-up included), the mean "
                  "over the samples with the GPU busy at all, peak; peak GPU memory used.", ""]
    lines += ["| videos | command | videos/s | speed-up | CPU s/video | cores used | peak RSS GiB | peak PSS GiB |"
              + (" GPU util % mean / busy / peak | GPU GiB |" if gpu else ""),
              "|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if gpu else "")]
    for size in sizes:
        best = max((by[(size, m)]["videos_per_s"] for m in ("loop-1t", "loop-2t") if (size, m) in by), default=None)
        for mode in MODES:
            r = by.get((size, mode))
            if r:
                speed = f"{r['videos_per_s'] / best:.2f}x" if best else "-"
                g = r.get("gpu")
                cells = (f" {g['util_mean_pct']:.0f} / {g['util_busy_mean_pct']:.0f} / {g['util_peak_pct']:.0f} | "
                         f"{g['peak_mem_gib']:.1f} |" if g else " - | - |") if gpu else ""
                lines.append(f"| {size} | {mode} | {r['videos_per_s']:.3f} | {speed} | {r['cpu_s_per_video']:.2f} | "
                             f"{r['cores_used']:.2f} | {r['peak_rss_gib']:.2f} | {r['peak_pss_gib']:.2f} |{cells}")
    if len(sizes) > 1:
        for mode in ("fused", "split"):
            low, high = by.get((sizes[0], mode)), by.get((sizes[-1], mode))
            if low and high:
                lines.append(f"\n{mode}: peak RSS at {sizes[-1]} videos is {high['peak_rss_gib'] / low['peak_rss_gib']:.2f}x "
                             f"its peak at {sizes[0]} (PSS {high['peak_pss_gib'] / low['peak_pss_gib']:.2f}x).")
                if high.get("peak_rss_gib_by_quarter"):
                    roles = ", ".join(f"{k} {v:.2f}" for k, v in high["peak_rss_gib_by_role"].items())
                    quarters = " / ".join(f"{q:.2f}" for q in high["peak_rss_gib_by_quarter"])
                    lines.append(f"At {sizes[-1]} videos, peak RSS GiB per quarter of the run: {quarters}; per role: {roles}.")
    plans = sorted({r["plan_line"] for r in runs if r["plan_line"]})
    if plans:
        lines += ["", "Plans as the scans printed them:", "", *(f"- `{p}`" for p in plans)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", default=["32", "128"],
                        help="videos per run, each N (every --modes) or N:mode,mode (default: 32 128); e.g. the "
                             "documented run: 32 128:loop-2t,fused,split 512:fused")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--frames", type=int, default=32, help="frames sampled per video (every command)")
    parser.add_argument("--sample-every", type=float, default=1.0,
                        help="seconds between memory/CPU samples of the process tree (default 1.0; reading every "
                             "process's smaps every 0.2 s cost the scan, with its ~15 processes, a share of a core)")
    parser.add_argument("--pss-every", type=int, default=10,
                        help="read PSS on every Nth sample only (default 10): smaps_rollup of the scan's 13 "
                             "processes cost 86 ms of CPU per sample (measured 2026-12-05), i.e. 9%% of a core "
                             "taken from the command under test at 1 s; RSS and CPU are read every sample")
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA, help="folder of .mp4 videos to cycle")
    parser.add_argument("--scan-args", default="", help="extra flags for both scan commands, e.g. '--fused-actors 2'")
    parser.add_argument("--json", type=Path, default=Path("bench-scan.json"), help="raw results (default: ./bench-scan.json)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    add_docs_flags(parser, SECTION)
    parser.add_argument("--workdir", type=Path, help="where the symlinks and outputs go (default: the temp dir)")
    args = parser.parse_args()
    before = round(quiet_load(args)[0], 2)  # before the temp folder: a refusal leaves nothing behind

    workdir = Path(tempfile.mkdtemp(prefix="scan-bench-", dir=args.workdir))
    try:
        ckpt, kind = checkpoint(workdir, "scan timing only")
        env = {**os.environ, "DFS_CLASSIFY__CHECKPOINT": str(ckpt), "HF_HUB_OFFLINE": "1",
               "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        runs = []
        for size, modes in parse_sizes(args.sizes, args.modes):
            folder = workdir / f"videos-{size}"
            files = make_inputs(folder, size, args.media)
            for mode in modes:
                runs.append(run_one(mode, files, folder, workdir, args, env))
                print(json.dumps(runs[-1]), flush=True)
            shutil.rmtree(folder, ignore_errors=True)
        gpus = GpuSampler().names()
        report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, "
                  f"{psutil.virtual_memory().total / 2**30:.0f} GiB" + (f", {len(gpus)} GPU ({', '.join(sorted(set(gpus)))})" if gpus else ""), "frames": args.frames, "media": str(args.media),
                  "checkpoint": kind, "sizes": args.sizes, "command": command_line(), "load_average": {"before": before, "after": round(os.getloadavg()[0], 2)},
                  "runs": runs}
        table = render(report)
        print("\n" + table)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        if args.markdown:
            args.markdown.write_text(table)
        if args.write_docs:
            write_section(args.write_docs, SECTION, table)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
