"""Two people in one video, one of them possibly swapped: FF++ validation clips set side by side (docs/training.md,
"v26"). Validation shows one person per clip, so it cannot tell how a video-level aggregation treats a swapped face
beside a real one; these composites can.

Every fake of the split beside two real clips of other people (FAKE; its side alternates), and every pair of the
split's real clips (REAL). Each composite is the first ``--seconds`` of both clips, the taller one scaled down to
the other's height, encoded with libx264 CRF 18 at the first clip's frame rate. The split is FF++'s own
identity split (``jobs.training.evaluate.select_videos``, seed 0), so no person of the training split appears.

Usage: .venv/bin/python scripts/composites.py ../shared/data/ffpp-c23 data-cache/ffpp-pairs [--split val]
Writes OUT/labels.csv (path,label,method,group,split: the split column is the source's split) for
`deepfakestream evaluate OUT/labels.csv --split val`. Composites already written are kept.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import cv2
import numpy as np


def _frames(path: Path, seconds: float) -> tuple[list[np.ndarray], float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= round(seconds * rate):
                break
    return frames, rate


def compose(left: Path, right: Path, out: Path, seconds: float) -> None:
    import av

    a, rate = _frames(left, seconds)
    b, _ = _frames(right, seconds)
    height = min(a[0].shape[0], b[0].shape[0])
    fit = lambda f: f if f.shape[0] == height else cv2.resize(  # noqa: E731
        f, (round(f.shape[1] * height / f.shape[0]), height), interpolation=cv2.INTER_AREA)
    frames = [np.hstack([fit(x), fit(y)]) for x, y in zip(a, b)]
    width = frames[0].shape[1] - frames[0].shape[1] % 2
    tmp = out.with_suffix(".tmp.mp4")
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=round(rate), options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height - height % 2, "yuv420p"
        for frame in frames:
            picture = np.ascontiguousarray(frame[: stream.height, :width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="FaceForensics++ folder (labels.csv or its layout)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from jobs.training.evaluate import select_videos

    videos = select_videos(args.source, args.split)
    reals = [v for v in videos if v.label == "REAL"]
    fakes = [v for v in videos if v.label == "FAKE"]
    rng = np.random.default_rng(args.seed)
    jobs = []
    for n, fake in enumerate(fakes):
        others = [r for r in reals if not set(r.identities) & set(fake.identities)]
        for k, real in enumerate(rng.choice(len(others), size=min(2, len(others)), replace=False)):
            pair = (fake, others[real]) if (n + k) % 2 == 0 else (others[real], fake)
            jobs.append((pair, "FAKE", f"{fake.method}"))
    for a, b in itertools.combinations(reals, 2):
        jobs.append(((a, b), "REAL", "original"))
    rows, started = [], time.time()
    for i, ((left, right), label, method) in enumerate(jobs, 1):
        a, b = Path(left.path), Path(right.path)
        name = f"{label.lower()}_{a.parent.name}-{a.stem}__{b.parent.name}-{b.stem}.mp4"
        out = args.out / name
        if not out.exists():
            compose(a, b, out, args.seconds)
        rows.append([str(out.resolve()), label, method, f"pair-{i}", args.split])
        print(f"{i}/{len(jobs)} {name} ({time.time() - started:.0f} s)", flush=True)
    with (args.out / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "method", "group", "split"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
