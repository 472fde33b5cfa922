"""Load test of the online API's hardening (issue 13), loopback only, bounded in count and time:

1. the ingress replica's memory under N concurrent big uploads (default 8 x 99 MiB): its own heap
   (RssAnon) and its whole RSS, sampled every 10 ms, at the peak and after the requests;
2. the server at F times its admission capacity (default 2x, concurrent uploads of one video): how many
   got 200 and how many a quick 503 + Retry-After, and their latencies.

    .venv/bin/python bench/serve_load.py                                  # full size, prints the results
    .venv/bin/python bench/serve_load.py --write-docs docs/serve.md       # and records them ("Load test")
    .venv/bin/python bench/serve_load.py --smoke                          # tiny: does it run? (~1 min)

Starts its own local Ray (all cores) and deploys serve/app.py with the default settings (DFS_* env applies;
--max-inflight/--max-queued override). The big uploads are random bytes: the ingress receives, spools and
hands them on like any upload, and the decoder refuses them by their first bytes (415), so the numbers are
the ingress's, not a decoder's. Run it on a quiet machine: other load changes latencies, not memory
(--write-docs is refused, exit 2 ``machine_busy``, when the 1-minute load is above --max-load, unless --force).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))
sys.path.append(str(ROOT / "tests"))

from bench_common import (add_docs_flags, checkpoint, command_line, percentile, quiet_load, wait_healthy,  # noqa: E402
                          write_section)
from helpers import PeakMemory, find_processes, memory_kib  # noqa: E402  (the /proc readers the tests use too)

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

SECTION = "## Load test"
INTRO = """`bench/serve_load.py` (loopback only, bounded in count and time) starts a local Ray with the default
settings and measures (1) the ingress replica's memory under {uploads} concurrent uploads of {upload_mib:g} MiB: its own heap
(`RssAnon`) and whole RSS, sampled every 10 ms, at the peak and 3 s after, and (2) the server at {factor:g}x its
admission capacity (concurrent uploads of `{media}`, {factor:g} x (max_inflight + max_queued)): how
many got 200, how many a quick 503 and how many ran past the request deadline (504), and their latencies. `--smoke` runs it tiny (does it work?), and
`--write-docs docs/serve.md` replaces this section with the measured numbers.
"""
APP = "deepfakestream-load"
MiB = 1024**2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def post_all(url: str, name: str, payload: bytes, n: int, budget_s: float) -> list[tuple[int, float, dict]]:
    """``n`` concurrent uploads of ``payload``: (status, seconds, headers) each; the whole step within budget_s."""
    async def one(client: httpx.AsyncClient) -> tuple[int, float, dict]:
        start = time.monotonic()
        try:
            response = await client.post("/v1/score", files={"file": (name, payload)})
            return response.status_code, time.monotonic() - start, dict(response.headers)
        except httpx.HTTPError as exc:
            return -1, time.monotonic() - start, {"error": type(exc).__name__}

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=budget_s, limits=limits) as client:
        return await asyncio.wait_for(asyncio.gather(*(one(client) for _ in range(n))), budget_s + 30)


def ingress_pid() -> int:
    pids = [p for p in find_processes(f"ServeReplica:{APP}:Api") if memory_kib(p)]
    if len(pids) != 1:
        raise RuntimeError(f"expected one ingress replica process, found {pids}")
    return pids[0]


def memory_step(url: str, upload_mib: float, uploads: int, budget_s: float) -> dict:
    pid = ingress_pid()
    payload = os.urandom(int(upload_mib * MiB))
    asyncio.run(post_all(url, "x.bin", payload[: MiB], 1, budget_s))  # warm the path
    time.sleep(1)
    before = memory_kib(pid)
    start = time.monotonic()
    with PeakMemory(pid) as peak:
        results = asyncio.run(post_all(url, "x.bin", payload, uploads, budget_s))
    seconds = time.monotonic() - start
    time.sleep(3)
    after = memory_kib(pid)
    mib = {k: round(v / 1024, 1) for k, v in before.items()}
    return {
        "uploads": uploads, "upload_mib": upload_mib, "seconds": round(seconds, 1),
        "statuses": dict(collections.Counter(s for s, _, _ in results)),
        "before_mib": mib,
        "peak_growth_mib": {k: round((peak.peak.get(k, 0) - v) / 1024, 1) for k, v in before.items()},
        "after_growth_mib": {k: round((after.get(k, 0) - v) / 1024, 1) for k, v in before.items()},
    }


def overload_step(url: str, media: Path, capacity: int, factor: float, budget_s: float) -> dict:
    n = max(1, round(capacity * factor))
    start = time.monotonic()
    results = asyncio.run(post_all(url, media.name, media.read_bytes(), n, budget_s))
    seconds = time.monotonic() - start
    by_status: dict[int, list[float]] = collections.defaultdict(list)
    for status, took, _ in results:
        by_status[status].append(took)
    retry_after = sorted({h.get("retry-after") for s, _, h in results if s == 503})
    return {
        "requests": n, "capacity": capacity, "seconds": round(seconds, 1), "retry_after": retry_after,
        "by_status": {s: {"n": len(v), "p50_s": round(percentile(v, 0.5), 2), "p95_s": round(percentile(v, 0.95), 2),
                          "max_s": round(max(v), 2)} for s, v in sorted(by_status.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upload-mib", type=float, default=99)
    parser.add_argument("--uploads", type=int, default=8, help="concurrent big uploads")
    parser.add_argument("--factor", type=float, default=2.0, help="overload step: requests = factor x capacity")
    parser.add_argument("--media", type=Path, default=ROOT / "pipeline" / "samples" / "pair_pan.mp4",
                        help="what the overload step uploads")
    parser.add_argument("--max-inflight", type=int, help="serve.max_inflight (default: the settings')")
    parser.add_argument("--max-queued", type=int, help="serve.max_queued (default: the settings')")
    parser.add_argument("--frames", type=int, help="decode.num_frames (default: the settings')")
    parser.add_argument("--budget-s", type=float, default=300, help="time limit of each step")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: 2 x 4 MiB uploads, capacity 2 + 2, 4 frames")
    add_docs_flags(parser, SECTION)
    args = parser.parse_args()
    load_before = quiet_load(args)
    if args.smoke:
        args.upload_mib, args.uploads, args.budget_s = 4, 2, 120
        args.max_inflight, args.max_queued, args.frames = args.max_inflight or 2, args.max_queued or 2, args.frames or 4

    workdir = Path(tempfile.mkdtemp(prefix="dfs-load-"))
    try:
        results = measure(args, workdir, load_before)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the ImageNet-initialised checkpoint, where one was made
    print(json.dumps(results, indent=2))
    print(render(results))
    if args.write_docs:
        write_section(args.write_docs, SECTION, render(results))
        print(f"wrote {SECTION!r} in {args.write_docs}")


def measure(args: argparse.Namespace, workdir: Path, load_before: tuple[float, float, float]) -> dict:
    import ray
    from ray import serve

    from pipeline.config import load_settings
    from serve.app import deploy

    ckpt, ckpt_note = checkpoint(workdir, "serve load test only")
    port = free_port()
    overrides = {"classify.checkpoint": str(ckpt), "serve.port": port, "serve.host": "127.0.0.1", "serve.app_name": APP}
    for key, value in (("serve.max_inflight", args.max_inflight), ("serve.max_queued", args.max_queued),
                       ("decode.num_frames", args.frames)):
        if value is not None:
            overrides[key] = value
    settings = load_settings(**overrides)
    cfg = settings.serve
    url = f"http://127.0.0.1:{port}"
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    try:
        deploy(settings)
        wait_healthy(url)
        capacity = cfg.ingress_replicas * (cfg.max_inflight + cfg.max_queued)
        results = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "checkpoint": ckpt_note, "settings": {"max_inflight": cfg.max_inflight, "max_queued": cfg.max_queued,
                                                  "ingress_replicas": cfg.ingress_replicas,
                                                  "spool_memory_mib": round(cfg.spool_memory_bytes / MiB, 2),
                                                  "request_timeout_s": cfg.request_timeout_s,
                                                  "num_frames": settings.decode.num_frames},
            "memory": memory_step(url, args.upload_mib, args.uploads, args.budget_s),
            "overload": overload_step(url, args.media, capacity, args.factor, args.budget_s),
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in os.getloadavg()]},
            "media": args.media.name, "media_path": _shown(args.media), "factor": args.factor, "smoke": args.smoke,
            "command": command_line(),
        }
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it is inside it (pipeline/samples/pair_pan.mp4)."""
    resolved = path.resolve()
    return resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(path)


def render(r: dict) -> str:
    m, o, s = r["memory"], r["overload"], r["settings"]
    per = m["peak_growth_mib"].get("RssAnon", 0) / max(1, m["uploads"])
    lines = [
        SECTION,
        "",
        INTRO.format(uploads=m["uploads"], upload_mib=m["upload_mib"], factor=r["factor"], media=r["media_path"]),
        f"Measured by `{r['command']}` on {time.strftime('%Y-%m-%d')}: {r['machine']}; load average before/after "
        f"{r['load_average']['before'][0]}/{r['load_average']['after'][0]}. Real HTTP on 127.0.0.1, {s['ingress_replicas']} ingress replica(s), "
        f"max_inflight {s['max_inflight']}, max_queued {s['max_queued']}, spool in memory up to "
        f"{s['spool_memory_mib']} MiB, {s['num_frames']} frames per video, detector: {r['checkpoint']}"
        + (" (**smoke run: tiny sizes, not a measurement**)" if r["smoke"] else "") + ".",
        "",
        f"Ingress replica memory, {m['uploads']} concurrent uploads of {m['upload_mib']:g} MiB (random bytes: "
        f"received, spooled, handed on, refused by the decoder; statuses {m['statuses']}, {m['seconds']} s):",
        "",
        "| ingress replica | before | peak growth | growth 3 s after |",
        "|---|---|---|---|",
    ]
    for key, label in (("RssAnon", "own heap (RssAnon)"), ("VmRSS", "whole RSS (VmRSS)"),
                       ("RssShmem", "object-store pages touched (RssShmem)")):
        lines.append(f"| {label} | {m['before_mib'].get(key)} MiB | {m['peak_growth_mib'].get(key):+} MiB | "
                     f"{m['after_growth_mib'].get(key):+} MiB |")
    lines += ["", f"Heap growth per concurrent upload at the peak: {per:.0f} MiB for {m['upload_mib']:g} MiB "
              f"({per / m['upload_mib']:.2f}x).", "",
              f"{o['requests']} concurrent uploads of `{r['media']}` against a capacity of {o['capacity']} "
              f"(max_inflight + max_queued per ingress replica), {o['seconds']} s in all; Retry-After: {', '.join(o['retry_after']) or 'none'} s:",
              "", "| status | count | p50 | p95 | max |", "|---|---|---|---|---|"]
    for status, v in o["by_status"].items():
        lines.append(f"| {status} | {v['n']} | {v['p50_s']} s | {v['p95_s']} s | {v['max_s']} s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
