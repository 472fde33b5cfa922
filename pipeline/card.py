"""The model card: what a checkpoint is, how to feed it, how good it is (``X.json`` beside ``X.safetensors``).

Torch-free on purpose: the scan's driver and the report commands read cards without importing torch or timm
(about 4.5 s of start-up on a 2-core machine)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from pipeline.aggregate import Strategy
from pipeline.errors import CheckpointError, NoTrainedModelError
from pipeline.preprocess import RGB_MEAN, RGB_STD, SRM_TRUNCATE

class ModelSpec(BaseModel):
    """Everything needed to rebuild the network; stored in the model card and checked on load."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key in a hand-edited card is refused, not ignored

    encoder: str = "tf_efficientnet_lite0"
    input_mode: Literal["srm", "rgb+srm", "rgb"] = "rgb+srm"
    input_size: int = Field(224, ge=32)
    # Preprocessing the weights were trained with, so it travels with them (cards before v6: 0.3).
    crop_margin: float = Field(0.3, ge=0, le=2, description="face box grows by this fraction per side before cropping")
    head_hidden: int = Field(128, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)


class Normalisation(BaseModel):
    """How crop pixels become the encoder's input: the network is built from these (``DeepfakeDetector``), so a
    card's values are used, never only shown."""

    model_config = ConfigDict(extra="forbid")

    input: str = "RGB uint8 face crop, margin-padded, aspect kept, zero-padded to input_size"
    rgb_mean: tuple[float, float, float] = RGB_MEAN
    rgb_std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = RGB_STD
    srm_truncate: PositiveFloat = SRM_TRUNCATE


CARD_FORMAT = 1


class ModelCard(BaseModel):
    """What a checkpoint is, how to feed it, how good it is and where it came from."""

    model_config = ConfigDict(extra="forbid")  # `"treshold": 0.99` would leave the threshold as it was, silently

    format: int = CARD_FORMAT
    name: str = "deepfakestream-srm-effnet"
    version: str
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    architecture: ModelSpec
    normalisation: Normalisation = Field(default_factory=Normalisation)
    threshold: float = Field(0.5, ge=0, le=1)
    aggregation: Strategy = "mean"
    min_track_frames: int = Field(1, ge=1, description="tracks seen in fewer sampled frames give no verdict")
    tta_flip: bool = Field(False, description="average each face's score with its mirror image's")
    target_fpr: float | None = Field(None, gt=0, lt=1, description="false-positive rate on validation reals the threshold was chosen for")
    trained: bool = True
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)


def card_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def write_card(card: ModelCard, weights_path: Path | str) -> Path:
    """Rewrite the card beside ``weights_path`` whole or not at all: every command reads it, so a half-written
    one (Ctrl-C, a full disk) would stop them all."""
    from pipeline.atomic import write_atomic

    path = card_path(Path(weights_path))
    write_atomic(path, (card.model_dump_json(indent=2) + "\n").encode(), durable=True)
    return path


def read_card(path: Path | str) -> ModelCard:
    path = Path(path)
    card_file = card_path(path)
    if not path.exists():
        raise NoTrainedModelError(
            f"no trained detector is installed (no checkpoint at {path}); train one with "
            "`deepfakestream train` or point DFS_CLASSIFY__CHECKPOINT at a checkpoint"
        )
    if not card_file.exists():
        raise CheckpointError(f"checkpoint {path} has no model card at {card_file}")
    try:
        return ModelCard.model_validate_json(card_file.read_text())
    except ValidationError as exc:
        raise CheckpointError(f"model card {card_file} is invalid: {exc}") from exc


def trained_card(card: ModelCard, path: Path | str) -> ModelCard:
    if not card.trained:
        raise NoTrainedModelError(f"checkpoint {path} is marked untrained; refusing to report its scores")
    return card


def pack_checkpoint(path: Path | str) -> tuple[ModelCard, bytes]:
    """The card and the raw weights file, without building the network: what a Ray worker on a node
    without the file needs (it travels through the object store)."""
    card = trained_card(read_card(path), path)
    return card, Path(path).read_bytes()
