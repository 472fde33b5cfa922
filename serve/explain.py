"""Grad-CAM heat maps for face crops (``POST /v1/score?explain=true``).

Grad-CAM (Selvaraju et al., 2017) on the encoder's last feature map: the map's channels are weighted by
the mean gradient of the fake logit, summed, rectified, upsampled to the crop and blended over it. Red
areas pushed the score towards FAKE. The map is coarse (7x7 for a 224 px crop) and explains the network,
not the truth.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import torch

from pipeline.classify import FaceClassifier
from pipeline.preprocess import crops_to_tensor


def grad_cam(classifier: FaceClassifier, crops: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(heat maps (N, S, S) float32 in [0, 1], fake probabilities (N,)) for uint8 crops (N, S, S, 3)."""
    model = classifier.model
    size = crops.shape[1]
    maps, probs = [], []
    for start in range(0, len(crops), batch_size):
        pixels = crops_to_tensor(crops[start:start + batch_size], classifier.device)
        with torch.no_grad():
            features = model.encoder.forward_features(model.normalise(pixels))
        features = features.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.head(model.encoder.forward_head(features, pre_logits=True)).squeeze(1)
            (grads,) = torch.autograd.grad(logits.sum(), features)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * features).sum(dim=1)).detach().float().cpu().numpy()
        for single in cam:
            peak = float(single.max())
            single = single / peak if peak > 0 else np.zeros_like(single)
            maps.append(cv2.resize(single, (size, size), interpolation=cv2.INTER_LINEAR))
        probs.append(torch.sigmoid(logits.detach().float()).cpu().numpy())
    if not maps:
        return np.zeros((0, size, size), np.float32), np.zeros(0, np.float32)
    return np.stack(maps).astype(np.float32), np.concatenate(probs).astype(np.float32)


def overlay_png(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> str:
    """The crop with its heat map blended over it, as base64 PNG."""
    colour = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)  # BGR
    blended = cv2.addWeighted(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), 1 - alpha, colour, alpha, 0)
    ok, png = cv2.imencode(".png", blended)
    if not ok:  # pragma: no cover - cv2 encodes any uint8 BGR image
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(png.tobytes()).decode("ascii")


def explain_crops(classifier: FaceClassifier, crops: np.ndarray, max_faces: int) -> list[str | None]:
    """One base64 PNG per crop (the first ``max_faces``; None for the rest)."""
    crops = np.asarray(crops, np.uint8)
    chosen = crops[:max_faces]
    heat, _ = grad_cam(classifier, chosen) if len(chosen) else (np.zeros((0,)), None)
    pngs: list[str | None] = [overlay_png(c, h) for c, h in zip(chosen, heat)]
    return pngs + [None] * (len(crops) - len(chosen))
