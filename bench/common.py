"""Shared by the benchmarks: which detector checkpoint to time."""

from __future__ import annotations

import os
from pathlib import Path


def checkpoint(workdir: Path, purpose: str) -> tuple[Path, str]:
    """DFS_CLASSIFY__CHECKPOINT, else the shipped detector, else an ImageNet-initialised one (timing only)."""
    from pipeline.checkpoint import imagenet_init_checkpoint
    from pipeline.config import DEFAULT_CHECKPOINT

    env = os.environ.get("DFS_CLASSIFY__CHECKPOINT")
    if env:
        return Path(env), "DFS_CLASSIFY__CHECKPOINT"
    if DEFAULT_CHECKPOINT.exists():
        from pipeline.checkpoint import read_card

        return DEFAULT_CHECKPOINT, f"shipped detector {read_card(DEFAULT_CHECKPOINT).version}"
    path = imagenet_init_checkpoint(workdir / "bench-detector.safetensors", "bench-imagenet-init", purpose)
    return path, "ImageNet-initialised (no shipped detector)"
