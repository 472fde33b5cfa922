"""scripts/data_note.py: the card's data description counts what was prepared, not v16's data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from jobs.training.prepare import prepare
from pipeline.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_note_counts_the_prepared_sets(tmp_path, samples_dir):
    (tmp_path / "media").mkdir()  # three files: a crop file is named by its video's path
    photo, other, third = (shutil.copy(samples_dir / "astronaut.jpg", tmp_path / "media" / f"p{i}.jpg") for i in range(3))
    rows = {  # crop set: labels (path, label, method, split); split "" = by identity group
        "ffpp64m15": [(photo, "REAL", "original", ""), (other, "FAKE", "NeuralTextures", ""), (third, "FAKE", "Deepfakes", "")],
        "th64m15": [(photo, "REAL", "original", "train"), (other, "REAL", "original", "val"), (third, "REAL", "original", "test")],
        "faces64m15": [(photo, "REAL", "original", "train")],
        "utk64m15": [(photo, "REAL", "original", "train"), (other, "REAL", "original", "train")],
        "utk64m15val": [(photo, "REAL", "original", "val")],
    }
    settings = load_settings(**{"detect.min_face_px": 20})
    for name, labels in rows.items():
        csv = tmp_path / f"{name}.csv"
        csv.write_text("path,label,method,group,split\n" + "".join(
            f"{path},{label},{method},g{i},{split}\n" for i, (path, label, method, split) in enumerate(labels)))
        prepare(csv, tmp_path / name, settings, crop_size=64, frames_real=1, frames_fake=1)
    (tmp_path / "utkface.csv").write_text("path,label,method,group,split\n" + "".join(
        f"u{i}.jpg,REAL,original,u{i},{split}\n" for i, split in enumerate(["train"] * 1500 + ["val", "test", "test"])))

    def note(real_fakes: str) -> str:
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "data_note.py"), "/data/mine", str(tmp_path),
                               "64m15", real_fakes], capture_output=True, text=True, timeout=60, check=True)
        assert done.stdout.count("\n") == 1
        return done.stdout.strip()

    assert note("1") == (
        "Research use only; none of it is redistributed. FaceForensics++ c23 subset (/data/mine/ffpp-c23: 1 original, "
        "2 manipulated videos; identity-group split 50/25/25, train split used: reals as SBI sources + its "
        "Deepfakes/NeuralTextures fakes); UTKFace aligned face photos (2 of 1,503 for training, 1 validation, 2 held "
        "out); 3 real talking-head clips from public face-animation repositories (1 training, 1 validation, 1 held "
        "out, split by source repository); 1 photos/clips of the facenet-pytorch and face_recognition example media "
        "(training).")
    assert "train split used: reals as SBI sources, its fakes not trained on)" in note("0")
