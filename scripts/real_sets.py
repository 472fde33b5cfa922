"""Labels CSVs for the extra real sets of ../shared/data, with fixed splits (detector v3 recipe).

- ``utkface.csv``: every UTKFace chip; split by a hash of its file name (train 85%, val 5%, test 10%).
  UTKFace has no identity labels, so each photo is its own group; the test slice is the held-out
  false-positive check and is never trained or tuned on.
- ``talking-heads.csv``: the 47 clips, split by *source repository* (one group each), so a person filmed
  in several clips of one repository never crosses splits. Obama is also in ``faces/`` (train), so
  EDTalk stays in train. Val and test sources were picked for variety (news, studio, film, crops).
- ``faces.csv``: the facenet-pytorch / face_recognition media, training only (as in v2).

A SHARED_DATA_DIR without one of the three folders, or with one that holds none of its files, is refused
(``not_found``, exit 2) before any CSV is written: a header-only CSV would stop the training script later, silently.

Usage: python scripts/real_sets.py SHARED_DATA_DIR OUT_DIR
"""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

from pipeline.errors import MediaNotFoundError

TALKING_HEAD_SPLIT = {
    # held-out false-positive check (never trained or tuned on)
    "ghost": "test", "metricaltracker": "test", "dreamtalk": "test",
    # validation: threshold and model selection
    "hdtf": "val", "spectre": "val", "videoretalking": "val",
}
UTK_SPLIT = (("val", 0.05), ("test", 0.10))  # rest is train


def utk_split(name: str) -> str:
    u = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for split, share in UTK_SPLIT:
        edge += share
        if u < edge:
            return split
    return "train"


def talking_head_split(name: str) -> str:
    return TALKING_HEAD_SPLIT.get(name.split("_")[0], "train")


def write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["path", "label", "method", "group", "split"])
        for file, group, split in rows:
            out.writerow([file, "REAL", "original", group, split])


def main(shared: Path, out: Path) -> None:
    utk = sorted((shared / "utkface" / "images").glob("*.jpg"))
    heads = sorted((shared / "talking-heads").glob("*.mp4"))
    faces = sorted(p for p in (shared / "faces").rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".mp4") and "tracked" not in p.name)
    sets = (("utkface/images", "*.jpg", utk), ("talking-heads", "*.mp4", heads), ("faces", "photos or .mp4", faces))
    lacking = [f"{where} ({kind})" for where, kind, found in sets if not found]
    if lacking:
        print(f"{MediaNotFoundError.code}: SHARED_DATA_DIR {shared} has no {', no '.join(lacking)}; nothing written",
              file=sys.stderr)
        sys.exit(2)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "utkface.csv", [(str(p.resolve()), f"utk-{p.stem}", utk_split(p.name)) for p in utk])
    write(out / "talking-heads.csv",
          [(str(p.resolve()), "th-" + p.stem.split("_")[0], talking_head_split(p.stem)) for p in heads])
    write(out / "faces.csv", [(str(p.resolve()), "faces-extra", "train") for p in faces])
    for name in ("utkface", "talking-heads", "faces"):
        rows = list(csv.DictReader((out / f"{name}.csv").open()))
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
        print(f"{name}: {len(rows)} files {counts}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
