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


def write_section(path: Path, section: str, body: str) -> None:
    """Replace (or append) only the ``section`` heading's part of a Markdown file; the rest stays byte for byte."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        text = "".join(lines[:start]) + body + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
