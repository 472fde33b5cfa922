"""The three classic 5×5 SRM high-pass filters (Zhou et al., CVPR 2018) as a fixed convolution.

Each filter is applied to the sum of the R, G and B planes (one 5×5×3 kernel per output map, as in the
RGB-N reference code), giving three noise-residual maps. Flat regions give zero; edges and resampling
artefacts, which face swaps leave behind, stand out.
"""

from __future__ import annotations

import torch
from torch import nn

_KV = [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]
_SQUARE3 = [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]
_EDGE = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]

SRM_KERNELS = torch.tensor([_SQUARE3, _KV, _EDGE], dtype=torch.float32) * torch.tensor([1 / 4, 1 / 12, 1 / 2]).view(3, 1, 1)


class SRMFilter(nn.Module):
    """Fixed (non-trainable) SRM convolution: (B, 3, H, W) → (B, 3, H, W) noise residuals.

    ``truncate`` clips the residuals (the TLU of steganalysis) so a few strong edges do not dominate.
    """

    def __init__(self, truncate: float | None = 3.0):
        super().__init__()
        weight = SRM_KERNELS.unsqueeze(1).repeat(1, 3, 1, 1)  # (out=3, in=3, 5, 5)
        self.register_buffer("weight", weight, persistent=False)
        self.truncate = truncate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.conv2d(x, self.weight.to(x.dtype), padding=2)
        if self.truncate is not None:
            out = out.clamp(-self.truncate, self.truncate)
        return out
