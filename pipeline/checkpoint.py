"""Checkpoints: fp16 safetensors weights + a JSON model card beside them (``X.safetensors`` + ``X.json``,
``pipeline.card``): saving, loading into the network, and the ImageNet-initialised stand-in.

The weights' own metadata repeats the card's name, version, architecture (which network, which crops) and
normalisation (how pixels become its input), and a load compares them: a card copied beside another run's weights, or
an edited ``rgb_mean``, would score them under its own threshold, crop size, margin or inputs, silently. Files written
before the architecture was recorded (the shipped v16 among them) hold name and version only; before the
normalisation was (2026-12-07), name, version and architecture: what they do not say is not checked.

torch and timm are imported where a network is built, not here: the scan's driver checks a card against its weights
(``check_card``) without them (about 4.5 s of start-up on 2 cores)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pydantic import ValidationError
from safetensors import SafetensorError

from pipeline.atomic import replacing, write_atomic
from pipeline.card import ModelCard, ModelSpec, Normalisation, card_path, read_card, trained_card
from pipeline.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from pipeline.model import DeepfakeDetector


# what a weights file repeats of its card beyond name and version, each as its card's JSON
RECORDED = {"architecture": ModelSpec, "normalisation": Normalisation}


def weights_metadata(card: ModelCard) -> dict[str, str]:
    """What a weights file says of itself (safetensors metadata is text only)."""
    return {"name": card.name, "version": card.version, **{k: getattr(card, k).model_dump_json() for k in RECORDED}}


def _read_metadata(handle: BinaryIO) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte little-endian length, then JSON)."""
    size = int.from_bytes(handle.read(8), "little")
    return json.loads(handle.read(size)).get("__metadata__") or {}


def _card_differences(metadata: dict[str, str], card: ModelCard) -> list[str]:
    """Where the card disagrees with what the weights say they are (only what they say: older files say less)."""
    said = {k: v for k, v in metadata.items() if k in ("name", "version")}
    problems = [f"the weights are {k} {v!r}, the card says {getattr(card, k)!r}" for k, v in said.items() if v != getattr(card, k)]
    for part in (p for p in RECORDED if p in metadata):  # older files say less
        try:
            saved = RECORDED[part].model_validate_json(metadata[part])
        except ValidationError as exc:
            problems.append(f"the weights' {part} metadata is unreadable ({exc.error_count()} errors)")
            continue
        ours = getattr(card, part)
        problems += [f"the weights were saved for {k}={v!r}, the card says {getattr(ours, k)!r}"
                     for k, v in saved if getattr(ours, k) != v]
    return problems


def _mismatch(path: Path | str, card: ModelCard, problems: list[str]) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} does not match its card (version {card.version!r}, architecture "
                           f"{card.architecture.model_dump()}): " + "; ".join(problems[:5]))


def check_card(path: Path | str, packed: tuple[ModelCard, bytes]) -> None:
    """Refuse (``CheckpointError``) a card that disagrees with what its weights say they are, from the weights'
    header alone (``pack_checkpoint``'s card and bytes): what ``load_checkpoint`` would refuse of the card, known
    before any worker builds the network."""
    card, weights = packed
    try:
        metadata = _read_metadata(io.BytesIO(weights))
    except ValueError as exc:  # a header that is not JSON: not a safetensors file
        raise CheckpointError(f"cannot read weights {path}: {exc}") from exc
    problems = _card_differences(metadata, card)
    if problems:
        raise _mismatch(path, card, problems)


def save_checkpoint(model: DeepfakeDetector, card: ModelCard, path: Path | str, dtype: torch.dtype | None = None
                    ) -> Path:
    """Write weights (fp16 unless ``dtype``) and card, each whole or not at all (temp file, then rename)."""
    import torch
    from safetensors.torch import save

    dtype = dtype or torch.float16
    path = Path(path)
    if card.architecture != model.spec or card.normalisation != model.normalisation:
        raise CheckpointError("model card architecture or normalisation does not describe this model")
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    # bytes, not save_file: that makes the file 0600 whatever the umask, unreadable to the service account
    # that serves it. The card is renamed last: a reader that finds the new card finds the new weights
    weights = save(tensors, metadata=weights_metadata(card))
    with replacing(card_path(path)) as tmp_card:
        tmp_card.write_text(card.model_dump_json(indent=2) + "\n")
        write_atomic(path, weights)
    return path


def load_checkpoint(path: Path | str, device: str = "cpu", require_trained: bool = True,
                    packed: tuple[ModelCard, bytes] | None = None) -> tuple[DeepfakeDetector, ModelCard]:
    """Rebuild the network from the card, load the weights, and say exactly what does not match: the card against
    the weights' metadata, the network against the tensors.

    ``packed`` (``pack_checkpoint``'s card and bytes) replaces reading ``path``."""
    from safetensors.torch import load, load_file

    from pipeline.model import DeepfakeDetector

    path = Path(path)
    card = packed[0] if packed else read_card(path)
    if require_trained:
        trained_card(card, path)
    try:
        tensors = load(packed[1]) if packed else load_file(str(path))
        with io.BytesIO(packed[1]) if packed else open(path, "rb") as handle:
            metadata = _read_metadata(handle)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc}") from exc
    model = DeepfakeDetector(card.architecture, card.normalisation)
    expected = model.state_dict()
    problems = _card_differences(metadata, card)
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
        raise _mismatch(path, card, problems)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return model.to(device).eval(), card


def imagenet_init_checkpoint(path: Path | str, version: str, purpose: str) -> Path:
    """A real network with ImageNet encoder weights and a seeded, untrained head, marked as such in its card.

    For tests and benchmarks that need the graph's cost or its agreement across front ends, not its
    verdicts. It is flagged ``trained=True`` only so that it loads; ``training.data`` says what it is.
    """
    import torch

    from pipeline.imagenet import load_imagenet_lite
    from pipeline.model import DeepfakeDetector

    torch.manual_seed(0)
    model = DeepfakeDetector(ModelSpec())
    model.load_encoder_imagenet(load_imagenet_lite(model.spec.encoder))
    card = ModelCard(version=version, architecture=model.spec,
                     training={"data": f"none: ImageNet encoder, random head ({purpose})"})
    return save_checkpoint(model, card, path)
