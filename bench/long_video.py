"""Decoding 32 frames of a long video: seeking to each far-off sample's keyframe against decoding on.

Usage: .venv/bin/python bench/long_video.py [--media ../shared/data] [--times 30] [--repeats 3]
(--media defaults to $DFS_SHARED_DATA where set.)
Builds long clips by repeating two ../shared clips' packets (no re-encode: FF++ original 004, 720p, and a 1080p
talking-head clip, each 30 times: 5-6 minutes), then times the PyAV decoder with jumps (the default) and without,
one thread, checks that both give the same frames, and times decord (which decodes every frame) for reference.
Prints a Markdown table; results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

import numpy as np  # noqa: E402
from bench_common import shared_data  # noqa: E402

from pipeline.config import DecodeConfig  # noqa: E402
from pipeline.decode import _packet_index, _sampled_frames, decode_bytes, sample_indices  # noqa: E402

CLIPS = ("ffpp-c23/original/004.mp4", "talking-heads/metricaltracker_duda_video.mp4")


def repeat(src: Path, dst: Path, times: int) -> None:
    """``src``'s video packets ``times`` times in a row, timestamps shifted: a long clip with the same GOPs."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        packets = [p for p in inp.demux(ist) if p.size]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
        for k in range(times):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts, q.duration, q.is_keyframe = p.pts + k * span, p.dts + k * span, p.duration, p.is_keyframe
                q.stream, q.time_base = ost, ist.time_base
                out.mux(q)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, default=shared_data())
    ap.add_argument("--times", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args()
    config = DecodeConfig(num_frames=args.frames, threads=1)
    print("| clip | duration | frames / keyframes | jumps: s (frames decoded) | decoding on: s (frames decoded) | same frames | decord s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rel in CLIPS:
            src = args.media / rel
            if not src.exists():
                print(f"| {rel} | missing under {args.media} | | | | | |")
                continue
            path = Path(tmp) / f"long-{src.name}"
            repeat(src, path, args.times)
            data = path.read_bytes()
            packets, pts, keyframes = _packet_index(data)
            indices = sample_indices(packets, args.frames)
            t_jump, (jumped, n_jump) = timed(lambda: _sampled_frames(data, config, indices, pts, keyframes), args.repeats)
            t_on, (through, n_on) = timed(lambda: _sampled_frames(data, config, indices, pts), args.repeats)
            same = len(jumped) == len(through) and np.array_equal(jumped.array, through.array)
            t_decord, media = timed(lambda: decode_bytes(data, DecodeConfig(num_frames=args.frames, backend="decord")), 1)
            h, w = through.array.shape[1:3]
            print(f"| {src.name} x{args.times} ({w}x{h}) | {media.duration:.0f} s | {packets} / {len(keyframes)} | "
                  f"{t_jump:.2f} ({n_jump}) | {t_on:.2f} ({n_on}) | {same} | {t_decord:.2f} |")


if __name__ == "__main__":
    main()
