"""Video-level validation of held-out crops: the selection metric every run and ``--resume`` agree on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from jobs.training.cropset import CropSet
from jobs.training.metrics import balanced_auc, binary_metrics, own_sources
from pipeline.errors import DeepfakeStreamError
from pipeline.preprocess import crops_to_tensor


class OneClassValidationError(DeepfakeStreamError, ValueError):
    """The val crops hold reals only or fakes only: video AUC, which picks the epoch that ships, is undefined."""

    code = "validation_one_class"


def validates(val: CropSet, datasets: list) -> bool:
    """Whether a run selects its epoch on validation: yes with reals and fakes, no with no val crops at all (the
    last epoch ships), refused with one class (said before the first epoch, not as a run that never saves)."""
    if not len(val):
        return False
    labels = [label for _, _, label in val.items]
    if 0 < sum(labels) < len(labels):
        return True
    have, lack = ("fake", "real") if labels[0] else ("real", "fake")
    raise OneClassValidationError(
        f"the val split of {', '.join(map(str, datasets))} holds {len(labels)} {have} crops of {len(set(val.videos))} "
        f"videos and no {lack} one: video AUC, which picks the best epoch, needs both. Add {lack} videos to a val "
        "split, or leave every val split empty to train without validation (the last epoch is kept)")


def predict(model: torch.nn.Module, crops: list[np.ndarray], device: torch.device, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            pixels = crops_to_tensor(np.stack(crops[start:start + batch_size]), device)
            out.append(torch.sigmoid(model(pixels).float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def validate(model: torch.nn.Module, val: CropSet, device: torch.device) -> dict[str, Any]:
    """Video-level metrics on held-out crops (video score = mean of its face scores).

    ``val_video_auc`` (the selection metric) weighs each real source equally (``metrics.balanced_auc``);
    ``val_ffpp_auc`` is FF++ alone (``metrics.own_sources``: the sources with fakes, their reals and fakes);
    ``val_real_mean/<source>`` shows how each real source scores."""
    from sklearn.metrics import roc_auc_score

    if not len(val):
        return {}
    indices = [row for row, _, _ in val.items]
    labels = np.array([label for _, _, label in val.items])
    scores = predict(model, [val.crops[i] for i in indices], device)
    videos = [val.videos[i] for i in indices]
    by_video: dict[str, list[int]] = {}
    for k, vid in enumerate(videos):
        by_video.setdefault(vid, []).append(k)
    video_ids = sorted(by_video)
    video_scores = np.array([scores[by_video[v]].mean() for v in video_ids])
    video_labels = np.array([labels[by_video[v][0]] for v in video_ids])
    video_sources = [val.sources[indices[by_video[v][0]]] for v in video_ids]
    frame = binary_metrics(labels, scores, 0.5)
    out: dict[str, Any] = {"val_frame_auc": frame["roc_auc"], "val_videos": len(video_ids), "val_faces": len(scores)}
    if (auc := balanced_auc(video_labels, video_scores, video_sources)) is not None:
        out["val_video_auc"] = auc
        _, own = own_sources(video_labels, video_sources)
        if len(np.unique(video_labels[own])) == 2:
            out["val_ffpp_auc"] = float(roc_auc_score(video_labels[own], video_scores[own]))
    for source in sorted(set(video_sources)):
        members = np.array([s == source and y == 0 for s, y in zip(video_sources, video_labels)])
        if members.any():
            out[f"val_real_mean/{source}"] = float(video_scores[members].mean())
    return out
