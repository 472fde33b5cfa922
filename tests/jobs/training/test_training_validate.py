"""The checkpoint-selection metric on held-out crops (jobs/training/validate.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jobs.training.cropset import CropSet
from jobs.training.metrics import balanced_auc
from jobs.training.prepare import encode_png
from jobs.training.validate import validate

SCALE = 200.0  # a crop of constant pixel value v scores v / SCALE under _PixelScore


class _PixelScore(torch.nn.Module):
    """Logit of (first pixel / SCALE): each crop's score is set by its pixel value."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        p = pixels[:, 0, 0, 0] / SCALE
        return torch.log(p / (1 - p))


def _rows(video: str, label: str, source: str, *scores: float) -> list[dict]:
    return [{"video": video, "label": label, "source": source, "box": [8.0, 8.0, 24.0, 24.0],
             "landmarks": [12, 12, 20, 12, 16, 16, 13, 20, 19, 20],
             "crop_png": encode_png(np.full((32, 32, 3), round(s * SCALE), np.uint8))} for s in scores]


def _val(*videos: list[dict]) -> CropSet:
    return CropSet([row for rows in videos for row in rows], sbi=False, real_fakes=True, seed=0, train=False)


def test_selection_metric_weighs_each_real_source_equally_with_video_means():
    # FF++: one real (0.3) below both fakes (0.5 and the mean of 0.85/0.95 = 0.9): AUC 1 against them.
    # Photos: four reals, two of them above a fake: 5 of the 8 (fake, photo) pairs in order, AUC 0.625.
    val = _val(_rows("ffpp/r1", "REAL", "ffpp", 0.3, 0.3), _rows("ffpp/f1", "FAKE", "ffpp", 0.5),
               _rows("ffpp/f2", "FAKE", "ffpp", 0.85, 0.95),
               *(_rows(f"photo{i}", "REAL", "photos", s) for i, s in enumerate([0.1, 0.2, 0.6, 0.95])))
    out = validate(_PixelScore(), val, torch.device("cpu"))
    assert out["val_videos"] == 7 and out["val_faces"] == 9
    assert out["val_video_auc"] == pytest.approx((1.0 + 0.625) / 2)  # per source, averaged (pooled would be 7/10)
    assert out["val_ffpp_auc"] == 1.0                                # the sources with fakes alone
    assert out["val_real_mean/ffpp"] == pytest.approx(0.3, abs=1e-3)
    assert out["val_real_mean/photos"] == pytest.approx(np.mean([0.1, 0.2, 0.6, 0.95]), abs=1e-3)
    # the one definition, shared with the evaluation's fit (jobs/training/evaluate.py)
    scores, labels = [0.3, 0.5, 0.9, 0.1, 0.2, 0.6, 0.95], [0, 1, 1, 0, 0, 0, 0]
    assert balanced_auc(np.array(labels), np.array(scores), ["ffpp"] * 3 + ["photos"] * 4) == out["val_video_auc"]


def test_no_selection_metric_without_both_classes():
    out = validate(_PixelScore(), _val(_rows("r1", "REAL", "ffpp", 0.2), _rows("r2", "REAL", "photos", 0.4)),
                   torch.device("cpu"))
    assert "val_video_auc" not in out and "val_ffpp_auc" not in out and out["val_videos"] == 2
    # a fake source whose own reals are missing: balanced AUC over the other sources, no FF++-alone AUC
    out = validate(_PixelScore(), _val(_rows("f1", "FAKE", "ffpp", 0.7), _rows("r2", "REAL", "photos", 0.4)),
                   torch.device("cpu"))
    assert out["val_video_auc"] == 1.0 and "val_ffpp_auc" not in out
    assert validate(_PixelScore(), _val(), torch.device("cpu")) == {}
