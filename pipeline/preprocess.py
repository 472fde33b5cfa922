"""Deterministic crop → tensor preprocessing, the single definition used by training and inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: the card reads these constants torch-free
    import torch

# tf_efficientnet_lite* were trained on inputs scaled to [-1, 1]
RGB_MEAN = (0.5, 0.5, 0.5)
RGB_STD = (0.5, 0.5, 0.5)
# SRM residuals are computed on 0..255 pixel values and truncated to ±SRM_TRUNCATE, then scaled to ±1
SRM_TRUNCATE = 3.0


def crops_to_tensor(crops: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 crops (N, S, S, 3) RGB → float tensor (N, 3, S, S) of 0..255 values, channels-last in memory.

    Normalisation happens inside the model (``DeepfakeDetector.normalise``) so that every caller,
    trainer, batch scan or server, feeds the same raw pixels and cannot get it wrong.
    """
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops of shape (N, S, S, 3), got {crops.dtype} {crops.shape}")
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
    return tensor.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
