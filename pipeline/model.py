"""The classifier network: SRM noise filters and/or RGB → EfficientNet (timm) → a small MLP head → fake logit."""

from __future__ import annotations

import timm
import torch
from torch import nn

from pipeline.card import ModelSpec, Normalisation
from pipeline.srm import SRMFilter


class DeepfakeDetector(nn.Module):
    """Takes raw 0..255 RGB crops (B, 3, S, S); returns one fake logit per crop (B,)."""

    def __init__(self, spec: ModelSpec | None = None, normalisation: Normalisation | None = None,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.spec = spec or ModelSpec()
        self.normalisation = norm = normalisation or Normalisation()  # the card's: it travels with the weights
        in_chans = 6 if self.spec.input_mode == "rgb+srm" else 3
        self.srm = SRMFilter(truncate=norm.srm_truncate)
        # drop_path_rate: training-only stochastic depth (identity in eval, no weights), so it is not in the card.
        self.encoder = timm.create_model(self.spec.encoder, pretrained=False, num_classes=0, in_chans=in_chans,
                                         drop_path_rate=drop_path_rate)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.num_features, self.spec.head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(self.spec.dropout),
            nn.Linear(self.spec.head_hidden, 1),
        )
        # not persistent: they are the card's, and runtime.graph_key hashes them from there
        self.register_buffer("rgb_mean", torch.tensor(norm.rgb_mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("rgb_std", torch.tensor(norm.rgb_std).view(1, 3, 1, 1) * 255, persistent=False)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """0..255 pixels → the encoder's input channels (RGB in [-1, 1] and/or SRM residuals in [-1, 1])."""
        if self.spec.input_mode == "rgb":  # no SRM work at all
            return (pixels - self.rgb_mean) / self.rgb_std
        srm = self.srm(pixels) / self.normalisation.srm_truncate
        if self.spec.input_mode == "srm":
            return srm
        return torch.cat([(pixels - self.rgb_mean) / self.rgb_std, srm], dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.normalise(pixels))).squeeze(1)

    def load_encoder_imagenet(self, state: dict[str, torch.Tensor]) -> None:
        """Load ImageNet encoder weights (3-channel stem) into this encoder, adapting the stem if needed.

        For ``rgb+srm`` both halves of the stem (RGB's and SRM's channels) start from the ImageNet filters,
        halved: their two sums then keep the first activations near ImageNet's scale.
        """
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        stem = state["conv_stem.weight"]
        if self.spec.input_mode == "rgb+srm":
            state["conv_stem.weight"] = torch.cat([stem, stem], dim=1) * 0.5
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"ImageNet weights do not fit {self.spec.encoder}: missing={missing} unexpected={unexpected}")
