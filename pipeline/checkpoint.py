"""Checkpoints: fp16 safetensors weights + a JSON model card beside them (``X.safetensors`` + ``X.json``)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save_file

from pipeline.errors import CheckpointError, NoTrainedModelError
from pipeline.model import DeepfakeDetector, ModelSpec
from pipeline.preprocess import RGB_MEAN, RGB_STD, SRM_TRUNCATE

CARD_FORMAT = 1


class ModelCard(BaseModel):
    """What a checkpoint is, how to feed it, how good it is and where it came from."""

    format: int = CARD_FORMAT
    name: str = "deepfakestream-srm-effnet"
    version: str
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    architecture: ModelSpec
    normalisation: dict[str, Any] = Field(
        default_factory=lambda: {
            "input": "RGB uint8 face crop, margin-padded, aspect kept, zero-padded to input_size",
            "rgb_mean": list(RGB_MEAN),
            "rgb_std": list(RGB_STD),
            "srm_truncate": SRM_TRUNCATE,
        }
    )
    threshold: float = Field(0.5, ge=0, le=1)
    aggregation: Literal["mean", "confident", "track_max"] = "mean"
    min_track_frames: int = Field(1, ge=1, description="tracks seen in fewer sampled frames give no verdict")
    tta_flip: bool = Field(False, description="average each face's score with its mirror image's")
    target_fpr: float | None = Field(None, gt=0, lt=1, description="false-positive rate on validation reals the threshold was chosen for")
    trained: bool = True
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)


def card_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_checkpoint(model: DeepfakeDetector, card: ModelCard, path: Path | str, dtype=torch.float16) -> Path:
    """Write weights (fp16 by default) and card atomically enough: temp files, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if card.architecture != model.spec:
        raise CheckpointError("model card architecture does not describe this model")
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    tmp_weights, tmp_card = path.with_suffix(".safetensors.tmp"), path.with_suffix(".json.tmp")
    save_file(tensors, str(tmp_weights), metadata={"version": card.version, "name": card.name})
    tmp_card.write_text(card.model_dump_json(indent=2) + "\n")
    tmp_weights.replace(path)
    tmp_card.replace(card_path(path))
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


def _trained(card: ModelCard, path: Path | str) -> ModelCard:
    if not card.trained:
        raise NoTrainedModelError(f"checkpoint {path} is marked untrained; refusing to report its scores")
    return card


def pack_checkpoint(path: Path | str) -> tuple[ModelCard, bytes]:
    """The card and the raw weights file, without building the network: what a Ray worker on a node
    without the file needs (it travels through the object store)."""
    card = _trained(read_card(path), path)
    return card, Path(path).read_bytes()


def load_checkpoint(path: Path | str, device: str = "cpu", require_trained: bool = True,
                    packed: tuple[ModelCard, bytes] | None = None) -> tuple[DeepfakeDetector, ModelCard]:
    """Rebuild the network from the card, load the weights, and say exactly what does not match.

    ``packed`` (``pack_checkpoint``'s card and bytes) replaces reading ``path``."""
    path = Path(path)
    card = packed[0] if packed else read_card(path)
    if require_trained:
        _trained(card, path)
    try:
        tensors = load(packed[1]) if packed else load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc}") from exc
    model = DeepfakeDetector(card.architecture)
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[:3]})")
    for key in sorted(set(expected) & set(tensors)):
        if tensors[key].shape != expected[key].shape:
            problems.append(f"{key}: checkpoint {tuple(tensors[key].shape)} vs model {tuple(expected[key].shape)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match architecture {card.architecture.model_dump()}: " + "; ".join(problems[:5])
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return model.to(device).eval(), card


def imagenet_init_checkpoint(path: Path | str, version: str, purpose: str) -> Path:
    """A real network with ImageNet encoder weights and a seeded, untrained head, marked as such in its card.

    For tests and benchmarks that need the graph's cost or its agreement across front ends, not its
    verdicts. It is flagged ``trained=True`` only so that it loads; ``training.data`` says what it is.
    """
    from pipeline.imagenet import load_imagenet_lite

    torch.manual_seed(0)
    model = DeepfakeDetector(ModelSpec())
    model.load_encoder_imagenet(load_imagenet_lite(model.spec.encoder))
    card = ModelCard(version=version, architecture=model.spec,
                     training={"data": f"none: ImageNet encoder, random head ({purpose})"})
    return save_checkpoint(model, card, path)
