"""The model card's data description for scripts/train_default.sh, counted from what was prepared.

A fixed text described v16's data whatever a rebuild was given (another SHARED_DATA_DIR, a subset of it): here every
count comes from the crop sets' manifests (``deepfakestream prepare``) and the UTKFace labels CSV
(``scripts/real_sets.py``), and the FaceForensics++ path is the one the script was given.

Usage: python scripts/data_note.py SHARED_DATA_DIR CACHE_DIR SUFFIX REAL_FAKES   (REAL_FAKES: 1 or 0, as the script's)
Prints the note on one line.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

SPLITS = ("train", "val", "test")


def _videos(cache: Path, name: str) -> list[dict]:
    """What a crop set was prepared from (each with its label, method and split)."""
    return json.loads((cache / name / "manifest.json").read_text())["videos"]


def _count(videos: list[dict], **match: str) -> int:
    return sum(all(v[k] == want for k, want in match.items()) for v in videos)


def note(shared: str, cache: Path, suffix: str, real_fakes: bool) -> str:
    ffpp = _videos(cache, f"ffpp{suffix}")
    fractions = json.loads((cache / f"ffpp{suffix}" / "manifest.json").read_text())["split_fractions"]
    methods = "/".join(sorted({v["method"] for v in ffpp if v["label"] == "FAKE"}))
    used = f"reals as SBI sources + its {methods} fakes" if real_fakes else "reals as SBI sources, its fakes not trained on"
    utk = [row["split"] for row in csv.DictReader((cache / "utkface.csv").open())]
    heads, faces = _videos(cache, f"th{suffix}"), _videos(cache, f"faces{suffix}")
    head_splits = ", ".join(f"{_count(heads, split=s)} {w}" for s, w in zip(SPLITS, ("training", "validation", "held out")))
    return (
        "Research use only; none of it is redistributed. "
        f"FaceForensics++ c23 subset ({shared}/ffpp-c23: {_count(ffpp, label='REAL')} original, "
        f"{_count(ffpp, label='FAKE')} manipulated videos; identity-group split "
        f"{'/'.join(str(round(100 * fractions[s])) for s in SPLITS if s in fractions)}, train split used: {used}); "
        f"UTKFace aligned face photos ({len(_videos(cache, f'utk{suffix}')):,} of {len(utk):,} for training, "
        f"{len(_videos(cache, f'utk{suffix}val')):,} validation, {utk.count('test'):,} held out); "
        f"{len(heads)} real talking-head clips from public face-animation repositories ({head_splits}, split by source "
        f"repository); {len(faces)} photos/clips of the facenet-pytorch and face_recognition example media (training)."
    )


if __name__ == "__main__":
    shared, cache, suffix, real_fakes = sys.argv[1:5]
    print(note(shared, Path(cache), suffix, real_fakes != "0"))
