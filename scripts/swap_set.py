"""A labelled set of classical face swaps on UTKFace's held-out photos: a fake method the detector never trains on,
over hundreds of people, to validate with beside FF++'s 12 validation fakes (docs/training.md, "v25").

Per split (val and test by default; UTKFace's own fixed splits, so no photo crosses), every photo is a target once:
the next photo of a seeded shuffle is its source, swapped onto it with the bundled demo's method
(`pipeline.samples.face_swap`: Delaunay warp of MTCNN's points, colour match, Poisson blend). The target itself is
written too, re-saved at the same JPEG quality, so both labels went through the same last encode and "was it
re-saved" cannot tell them apart. Photos where MTCNN finds no face in either image are left out.

Usage: .venv/bin/python scripts/swap_set.py data-cache/utkface.csv data-cache/utk-swaps [--splits val test]
Writes OUT/labels.csv (path,label,method,group,split) for `deepfakestream evaluate OUT/labels.csv --split val`.
Files already written are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path, help="a real-photo labels CSV with fixed splits (scripts/real_sets.py)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pipeline.atomic import replacing
    from pipeline.config import DetectConfig
    from pipeline.detect import FaceDetector
    from pipeline.samples import face_swap, swap_landmarks

    detector = FaceDetector(DetectConfig(), "cpu")
    with args.labels.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] in args.splits and r["label"] == "REAL"]
    out_rows, skipped, started = [], 0, time.time()
    for split in args.splits:
        paths = sorted(r["path"] for r in rows if r["split"] == split)
        order = np.random.default_rng(args.seed).permutation(len(paths))
        paths = [paths[i] for i in order]
        points: dict[str, np.ndarray | None] = {}
        for i, target_path in enumerate(paths):
            source_path = paths[(i + 1) % len(paths)]  # a cyclic shift of a shuffle: never the photo itself
            stem = Path(target_path).stem
            real_file, fake_file = args.out / split / "real" / f"{stem}.jpg", args.out / split / "swap" / f"{stem}.jpg"
            if not fake_file.exists():
                images = {p: np.asarray(Image.open(p).convert("RGB")) for p in (target_path, source_path)}
                for p, image in images.items():
                    if p not in points:
                        found = swap_landmarks(image, detector)
                        height, width = image.shape[:2]
                        # the derived forehead/chin points can fall outside a tight chip; Subdiv2D refuses them
                        points[p] = None if found is None else np.clip(found, 0, [width - 1, height - 1])
                if points[target_path] is None or points[source_path] is None:
                    skipped += 1
                    continue
                try:
                    fake = face_swap(images[target_path], images[source_path], points[target_path], points[source_path])
                except Exception:  # a hull at the chip's edge makes seamlessClone refuse: leave the pair out
                    skipped += 1
                    continue
                for file, image in ((real_file, images[target_path]), (fake_file, fake)):  # the swap last: it marks done
                    with replacing(file) as tmp:  # a file cut off by an interrupt is never taken as done
                        Image.fromarray(image).save(tmp, format="JPEG", quality=args.quality)
            for file, label, method in ((real_file, "REAL", "original"), (fake_file, "FAKE", "landmark-swap")):
                out_rows.append([str(file.resolve()), label, method, f"utkswap-{stem}", split])
            if (i + 1) % 100 == 0:
                print(f"{split}: {i + 1}/{len(paths)} targets, {skipped} left out, {time.time() - started:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "method", "group", "split"])
        writer.writerows(out_rows)
    print(f"{len(out_rows)} rows ({skipped} targets left out) in {time.time() - started:.0f} s -> {args.out / 'labels.csv'}")


if __name__ == "__main__":
    main()
