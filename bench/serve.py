"""Benchmark the online API: cold start, latency (one image, one 10 s video), throughput at 1/4/16 clients.

    .venv/bin/python bench/serve.py                       # print the results
    .venv/bin/python bench/serve.py --write-docs docs/benchmarks.md   # and record them ("Online scoring")

Starts its own local Ray (all cores), deploys serve/app.py with the default settings (DFS_* env applies),
talks to it over real HTTP on 127.0.0.1. The 10 s video is cut from ../shared/data/ffpp-c23/original (or
$DFS_SHARED_DATA's) when present (720p), else looped from the bundled astronaut_zoom.mp4. Without an installed
detector checkpoint the bench uses an ImageNet-initialised one: same network and cost, meaningless verdicts.
The requests per @serve.batch call are counted by every replica of the Detector and Classifier deployments
and summed (a handle call would reach one of them). --write-docs is refused (exit 2, ``machine_busy``) when the
1-minute load average is above --max-load before the run, unless --force.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

from bench_common import (add_docs_flags, checkpoint, command_line, percentile, quiet_load, shared_data,  # noqa: E402
                          wait_healthy, write_section)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from serve.problems import OVERLOADED  # noqa: E402

SECTION = "## Online scoring"
BATCHED = ("Detector", "Classifier")  # the deployments whose replicas count requests per @serve.batch call


def ten_second_clip(workdir: Path) -> tuple[Path, str]:
    """A 10 s H.264 clip: the first 10 s of an FF++ original when ../shared is there, else a looped sample."""
    import av

    shared = shared_data() / "ffpp-c23" / "original"
    sources = sorted(shared.glob("*.mp4")) if shared.is_dir() else []
    source = next((s for s in sources if _duration(s) >= 10), None)
    loop = source is None
    source = source or ROOT / "pipeline" / "samples" / "astronaut_zoom.mp4"
    out = workdir / "clip10s.mp4"
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        fps = stream.average_rate or 25
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(stream)]
    wanted = int(round(10 * float(fps)))
    frames = (frames * (wanted // len(frames) + 1))[:wanted] if loop else frames[:wanted]
    with av.open(str(out), "w") as dst:
        enc = dst.add_stream("libx264", rate=fps)
        enc.height, enc.width = frames[0].shape[:2]
        enc.pix_fmt = "yuv420p"
        enc.options = {"crf": "23", "preset": "veryfast"}
        for frame in frames:
            for packet in enc.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                dst.mux(packet)
        for packet in enc.encode():
            dst.mux(packet)
    h, w = frames[0].shape[:2]
    what = f"{'looped ' if loop else ''}{source.name}, first 10 s, {w}x{h} @ {float(fps):g} fps, re-encoded H.264"
    return out, what


def _duration(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return float(s.duration * s.time_base) if s.duration else 0.0


class Shed(Exception):
    """The server refused a request at its admission limit (503 ``overloaded``): load shedding, not a failure."""

    def __init__(self, retry_after: float):
        super().__init__(f"shed; retry after {retry_after} s")
        self.retry_after = retry_after


def _problem_code(response: httpx.Response) -> str | None:
    """The API's error code (serve/problems.py), or None for a body that is not one (e.g. Ray's proxy's text)."""
    try:
        return response.json().get("code")
    except ValueError:
        return None


async def _post(client: httpx.AsyncClient, name: str, data: bytes, shed_ok: bool = False) -> float:
    start = time.perf_counter()
    response = await client.post("/v1/score", files={"file": (name, data)})
    if shed_ok and response.status_code == 503 and _problem_code(response) == OVERLOADED[0]:
        raise Shed(float(response.headers.get("retry-after", 1)))
    if response.status_code != 200:
        raise RuntimeError(f"{name}: HTTP {response.status_code}: {response.text[:300]}")
    return (time.perf_counter() - start) * 1000


async def latency(url: str, name: str, data: bytes, n: int) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        return [await _post(client, name, data) for _ in range(n)]


async def throughput(url: str, name: str, data: bytes, clients: int, seconds: float) -> dict:
    """`clients` closed-loop clients for `seconds`: completed requests per second and their latencies. More
    clients than the server admits (serve.max_inflight + max_queued) get 503s: counted as shed, and that client
    waits for Retry-After (at most 1 s) before its next request, as a well-behaved caller would."""
    latencies: list[float] = []
    shed = [0]
    stop = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            try:
                latencies.append(await _post(client, name, data, shed_ok=True))
            except Shed as refused:
                shed[0] += 1
                await asyncio.sleep(min(refused.retry_after, 1.0))

    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "shed": shed[0], "seconds": round(elapsed, 1),
            "rps": round(len(latencies) / elapsed, 2), "p50_ms": round(percentile(latencies, 0.5)),
            "p95_ms": round(percentile(latencies, 0.95))}


def batch_stats(app_name: str) -> dict[str, dict[str, dict[int, int]]]:
    """{deployment: {replica: {requests per @serve.batch call: calls}}} from every live replica of BATCHED.
    A handle's ``stats.remote()`` reaches one replica (power of two choices), and there are 2 detectors by
    default, so each replica actor is asked itself: Ray's ``__ray_call__`` runs a function on the actor."""
    import ray
    from ray.serve._private.common import ReplicaID
    from ray.serve._private.constants import SERVE_NAMESPACE

    found: dict[str, dict[str, dict[int, int]]] = {d: {} for d in BATCHED}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] != SERVE_NAMESPACE or not ReplicaID.is_full_id_str(actor["name"]):
            continue
        replica = ReplicaID.from_full_id_str(actor["name"])
        if replica.deployment_id.app_name == app_name and replica.deployment_id.name in found:
            handle = ray.get_actor(actor["name"], namespace=SERVE_NAMESPACE)
            stats = ray.get(handle.__ray_call__.remote(_replica_stats), timeout=60)
            found[replica.deployment_id.name][replica.unique_id] = {int(k): v for k, v in stats["batch_sizes"].items()}
    if missing := [d for d, replicas in found.items() if not replicas]:
        raise RuntimeError(f"no live replica of {missing} in Serve app {app_name!r}")
    return found


def _replica_stats(replica_actor) -> dict:
    """In the replica's process: its deployment object's ``stats()`` (serve/deployments.py). Serve has no public
    way to reach one replica; these are its private attributes in the locked Ray 2.60: a rename fails loudly here."""
    return replica_actor._replica_impl._user_callable_wrapper.user_callable.stats()


def _diff(after: dict, before: dict) -> dict[str, dict[int, int]]:
    """Calls per batch size since ``before``, per replica (each counts its own), summed per deployment; a replica
    that is not in ``before`` (new) counts from zero."""
    totals: dict[str, dict[int, int]] = {}
    for deployment, replicas in after.items():
        summed: dict[int, int] = {}
        for replica, sizes in replicas.items():
            earlier = before.get(deployment, {}).get(replica, {})
            for size, calls in sizes.items():
                summed[size] = summed.get(size, 0) + calls - earlier.get(size, 0)
        totals[deployment] = {size: n for size, n in sorted(summed.items()) if n}
    return totals


def _gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--image-requests", type=int, default=30)
    parser.add_argument("--video-requests", type=int, default=8)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=20, help="per throughput step")
    parser.add_argument("--no-compare", action="store_true", help="skip the 16-client run without batching")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="also measure with these serve.* overrides, e.g. detect_replicas=2 (repeatable)")
    add_docs_flags(parser, SECTION)
    args = parser.parse_args()
    load_before = quiet_load(args)

    import ray
    from ray import serve

    from pipeline.config import load_settings
    from serve.app import deploy

    workdir = Path(tempfile.mkdtemp(prefix="dfs-bench-"))
    ckpt, ckpt_note = checkpoint(workdir, "serve timing only")
    clip, clip_note = ten_second_clip(workdir)
    image = ROOT / "pipeline" / "samples" / "astronaut.jpg"
    settings = load_settings(**{"classify.checkpoint": str(ckpt), "serve.port": args.port, "serve.host": "127.0.0.1"})
    url = f"http://127.0.0.1:{args.port}"

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)  # never a cluster
    t_ray = time.perf_counter() - t0
    t1 = time.perf_counter()
    deploy(settings)
    wait_healthy(url)
    t_deploy = time.perf_counter() - t1
    first_image = asyncio.run(latency(url, image.name, image.read_bytes(), 1))[0]
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_gpu()}",
        "command": command_line(), "checkpoint": ckpt_note, "num_frames": settings.decode.num_frames,
        "batching": {"detect": settings.serve.detect_max_batch_size, "classify": settings.serve.classify_max_batch_size},
        "clip": clip_note,
        "cold_start_s": {"ray_init": round(t_ray, 1), "deploy_until_healthy": round(t_deploy, 1),
                         "total": round(t_ray + t_deploy, 1), "first_image_request_ms": round(first_image)},
    }
    print(json.dumps(results, indent=2), flush=True)

    image_bytes, clip_bytes = image.read_bytes(), clip.read_bytes()
    asyncio.run(latency(url, image.name, image_bytes, 2))
    asyncio.run(latency(url, clip.name, clip_bytes, 1))
    img = asyncio.run(latency(url, image.name, image_bytes, args.image_requests))
    vid = asyncio.run(latency(url, clip.name, clip_bytes, args.video_requests))
    results["latency_ms"] = {
        "image": {"n": len(img), "p50": round(percentile(img, 0.5)), "p95": round(percentile(img, 0.95))},
        "video_10s": {"n": len(vid), "p50": round(percentile(vid, 0.5)), "p95": round(percentile(vid, 0.95))},
    }
    print(json.dumps(results["latency_ms"]), flush=True)

    results["throughput_image"] = []
    for clients in [int(c) for c in args.clients.split(",")]:
        before = batch_stats(settings.serve.app_name)
        step = asyncio.run(throughput(url, image.name, image_bytes, clients, args.seconds))
        step["batch_sizes"] = _diff(batch_stats(settings.serve.app_name), before)
        results["throughput_image"].append(step)
        print(json.dumps(step), flush=True)

    if not args.no_compare:
        serve.delete(settings.serve.app_name)
        unbatched = settings.model_copy(update={"serve": settings.serve.model_copy(
            update={"detect_max_batch_size": 1, "classify_max_batch_size": 1})})
        deploy(unbatched)
        wait_healthy(url)
        asyncio.run(latency(url, image.name, image_bytes, 2))
        clients = max(int(c) for c in args.clients.split(","))
        before = batch_stats(settings.serve.app_name)
        step = asyncio.run(throughput(url, image.name, image_bytes, clients, args.seconds))
        step["batch_sizes"] = _diff(batch_stats(settings.serve.app_name), before)
        results["throughput_image_unbatched"] = step
        print("unbatched", json.dumps(step), flush=True)

    results["variants"] = []
    for variant in args.variant:
        overrides = dict(item.split("=", 1) for item in variant.split(","))
        serve.delete(settings.serve.app_name)
        changed = settings.model_copy(update={"serve": settings.serve.model_validate(
            {**settings.serve.model_dump(), **overrides})})
        deploy(changed)
        wait_healthy(url)
        asyncio.run(latency(url, image.name, image_bytes, 2))
        img = asyncio.run(latency(url, image.name, image_bytes, max(5, args.image_requests // 3)))
        vid = asyncio.run(latency(url, clip.name, clip_bytes, max(2, args.video_requests // 2)))
        row = {"variant": variant, "image": {"n": len(img), "p50": round(percentile(img, 0.5))},
               "video_10s": {"n": len(vid), "p50": round(percentile(vid, 0.5))}, "throughput_image": []}
        for clients in [int(c) for c in args.clients.split(",")]:
            row["throughput_image"].append(asyncio.run(throughput(url, image.name, image_bytes, clients, args.seconds)))
        results["variants"].append(row)
        print("variant", json.dumps(row), flush=True)

    results["load_average"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.write_docs:
        write_section(args.write_docs, SECTION, render(results))
        print(f"wrote {SECTION!r} in {args.write_docs}")


def render(r: dict) -> str:
    c, lat = r["cold_start_s"], r["latency_ms"]
    lines = [
        SECTION,
        "",
        f"Measured by `{r['command']}` on {time.strftime('%Y-%m-%d')}: {r['machine']}; load average before/after "
        f"{r['load_average']['before'][0]}/{r['load_average']['after'][0]}; the load after is the bench's own. Real HTTP on 127.0.0.1, "
        f"default settings ({r['num_frames']} frames per video, @serve.batch max sizes detect "
        f"{r['batching']['detect']} / classify {r['batching']['classify']}), detector: {r['checkpoint']}.",
        f"Image: `pipeline/samples/astronaut.jpg` (512x512, one face). Video: {r['clip']}.",
        "",
        "| what | measured | target (2 cores) |",
        "|---|---|---|",
        f"| cold start: `ray.init` + deploy until `/v1/health` is 200 | {c['ray_init']} s + {c['deploy_until_healthy']} s "
        f"= {c['total']} s (first image request {c['first_image_request_ms']} ms) | |",
        f"| image latency p50 / p95 (n={lat['image']['n']}, one client) | {lat['image']['p50']} / {lat['image']['p95']} ms "
        f"| p50 < 300 ms: {_verdict(lat['image']['p50'] < 300)} |",
        f"| 10 s video latency p50 / p95 (n={lat['video_10s']['n']}, one client) | {lat['video_10s']['p50']} / "
        f"{lat['video_10s']['p95']} ms | p50 < 5000 ms: {_verdict(lat['video_10s']['p50'] < 5000)} |",
        "",
        "Image throughput, closed-loop clients (each sends its next request when the last one returns; a request "
        "refused at the admission limit, 503 `overloaded` past `serve.max_inflight` + `serve.max_queued`, counts as shed "
        "and its client waits for Retry-After, at most 1 s):",
        "",
        "| clients | requests/s | p50 / p95 latency | shed (503 overloaded) | requests per @serve.batch call (count, all replicas) |",
        "|---|---|---|---|---|",
    ]
    for step in r["throughput_image"]:
        lines.append(f"| {step['clients']} | {step['rps']} | {step['p50_ms']} / {step['p95_ms']} ms | {step.get('shed', 0)} | "
                     f"{_batches(step['batch_sizes'])} |")
    if "throughput_image_unbatched" in r:
        step = r["throughput_image_unbatched"]
        lines.append(f"| {step['clients']}, batching off (max_batch_size 1) | {step['rps']} | {step['p50_ms']} / "
                     f"{step['p95_ms']} ms | {step.get('shed', 0)} | {_batches(step['batch_sizes'])} |")
    steps = r["throughput_image"]
    if len(steps) > 1:
        first, last = steps[0], steps[-1]
        lines += ["", f"Throughput at {last['clients']} clients vs {first['clients']}: {last['rps']} / {first['rps']} = "
                  f"{last['rps'] / first['rps']:.2f}x (target: higher: {_verdict(last['rps'] > first['rps'])})."]
    if "throughput_image_unbatched" in r:
        off, on = r["throughput_image_unbatched"], steps[-1]
        lines += ["", f"Batching itself at {on['clients']} clients (same replicas, max_batch_size 1 vs default): "
                  f"{on['rps']} / {off['rps']} = {on['rps'] / off['rps']:.2f}x."]
    for v in r.get("variants", []):
        rps = ", ".join(f"{t['clients']}: {t['rps']}" for t in v["throughput_image"])
        lines += ["", f"Variant `{v['variant']}` (serve.* overrides): image p50 {v['image']['p50']} ms "
                  f"(n={v['image']['n']}), 10 s video p50 {v['video_10s']['p50']} ms (n={v['video_10s']['n']}), "
                  f"image requests/s by clients {rps}."]
    return "\n".join(lines) + "\n"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _batches(sizes: dict) -> str:
    return "; ".join(f"{d.lower()} " + ", ".join(f"{k}:{v}" for k, v in sorted(s.items(), key=lambda kv: int(kv[0])))
                     for d, s in sizes.items())


if __name__ == "__main__":
    main()
