"""Where was it blended? An auxiliary training target (Face X-ray, Li et al., CVPR 2020).

A pseudo-fake knows its alpha map: how much of each pixel came from the other face. Asking the encoder's
stride-16 features to predict that map as well as the label pushes them to find the seam rather than
remember who the person is. Training only: the head is dropped and the shipped network is unchanged.
A real's map is zero; a real fake's map is unknown (no FF++ masks here), so it adds nothing to this loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BlendMapHead(nn.Module):
    """Reads the encoder's last stride-16 block through a forward hook (so DDP and EMA wrap the detector as
    before) and predicts the blend map there, one logit per 16x16 pixels."""

    def __init__(self, encoder: nn.Module, hidden: int = 64):
        super().__init__()
        info = [f for f in encoder.feature_info if f["reduction"] == 16][-1]
        self.net = nn.Sequential(nn.Conv2d(info["num_chs"], hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 1, 1))
        self._features: torch.Tensor | None = None
        # a closure, not a bound method: a deep copy of the encoder (an EMA) must not drag this head along
        store = self.__dict__
        self._hook = encoder.get_submodule(info["module"]).register_forward_hook(
            lambda module, args, output: store.__setitem__("_features", output))

    def remove(self) -> None:
        self._hook.remove()

    def forward(self) -> torch.Tensor:
        """(B, 1, h, w) logits for the features of the encoder's latest forward pass."""
        if self._features is None:
            raise RuntimeError("BlendMapHead: run the detector first")
        return self.net(self._features)


def blend_map_loss(logits: torch.Tensor, maps: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE between ``logits`` (B, 1, h, w) and the alpha ``maps`` (B, H, W) in [0, 1], averaged to
    the logits' grid; only items whose map is ``known`` (B,) count. Zero when none is known."""
    if not bool(known.any()):
        return logits.sum() * 0.0
    target = F.adaptive_avg_pool2d(maps[known].unsqueeze(1).float(), logits.shape[-2:])
    return F.binary_cross_entropy_with_logits(logits[known].float(), target)
