"""Toy crop datasets, configs, an interrupted run and scored records that the training tests share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from jobs.training.config import TrainConfig
from jobs.training.prepare import CROP_SCHEMA, encode_png, write_table
from jobs.training.train import fit


def toy_dataset(root: Path, size: int = 32, per_class: int = 24, margin: float = 0.2) -> Path:
    """Separable toy crops: reals are smooth gradients, fakes carry strong pixel noise."""
    rng = np.random.default_rng(0)
    for split, videos in {"train": 4, "val": 2}.items():
        for v in range(videos):
            rows = []
            label = "REAL" if v % 2 == 0 else "FAKE"
            for i in range(per_class // videos * 2):
                base = np.linspace(0, 255, size)[None, :, None] * rng.uniform(0.3, 1.0, 3)
                img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
                if label == "FAKE":
                    img = img + rng.normal(0, 40, img.shape)
                crop = np.clip(img, 0, 255).astype(np.uint8)
                rows.append({"video": f"{split}{v}", "label": label, "method": "toy", "group": f"{split}{v}", "split": split,
                             "frame": i, "timestamp": 0.0, "track": 0, "det_prob": 1.0, "box": [8.0, 8.0, 24.0, 24.0],
                             "landmarks": [12, 12, 20, 12, 16, 16, 13, 20, 19, 20], "crop_png": encode_png(crop)})
            write_table(pa.Table.from_pylist(rows, schema=CROP_SCHEMA), root / "crops" / split / f"{split}{v}.parquet")
    (root / "manifest.json").write_text(json.dumps({"crop_size": size, "margin": margin, "source": "toy", "splits": {}}))
    return root


def toy_config(tmp_path: Path, epochs: int = 3, **extra) -> TrainConfig:
    data = toy_dataset(tmp_path / "toy")
    return TrainConfig(dataset=data, out_dir=tmp_path / "run", epochs=epochs, batch_size=8, lr=2e-3, sbi=False, real_fakes=True,
                       imagenet=False, patience=5, seed=1, codec_p=0.0, **extra)  # toy fakes are pixel noise: a codec would erase the cue


def fit_stop_after_one(config: TrainConfig) -> None:
    """Simulate a crash after epoch 1 of a 2-epoch run: run it, then roll last.pt back to epoch 1."""
    import jobs.training.train as train_module

    original = train_module.validate
    calls = {"n": 0}

    def crash_after_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash in epoch 2")
        return original(*args, **kwargs)

    train_module.validate = crash_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(config)
    finally:
        train_module.validate = original
    saved = torch.load(Path(config.out_dir) / "last.pt", weights_only=False)
    assert saved["state"]["epoch"] == 1


def score_records(prefix: str, source: str, label: str, scores, frames: int = 1) -> list[dict]:
    """Records as ``evaluate.score_videos`` writes them: one face per object, on track 0, with these scores."""
    return [{"path": f"{prefix}{i}", "label": label, "method": "original" if label == "REAL" else "X", "source": source,
             "error": "", "frames_sampled": frames, "face_scores": [s], "face_track": [0]} for i, s in enumerate(scores)]
