"""Shared by the benchmarks: which detector checkpoint to time, percentiles, waiting for the API, writing docs."""

from __future__ import annotations

import time
from pathlib import Path


def checkpoint(workdir: Path, purpose: str) -> tuple[Path, str]:
    """The settings' detector (DFS_CLASSIFY__CHECKPOINT or DFS_CONFIG as everywhere), else an ImageNet-initialised
    one (timing only)."""
    from pipeline.card import read_card
    from pipeline.checkpoint import imagenet_init_checkpoint
    from pipeline.config import DEFAULT_CHECKPOINT, load_settings

    chosen = Path(load_settings().classify.checkpoint)
    if chosen.resolve() != DEFAULT_CHECKPOINT.resolve() and not chosen.exists():
        raise SystemExit(f"bench: no detector at {chosen} (the settings' classify.checkpoint)")
    if chosen.exists():
        where = "shipped detector" if chosen.resolve() == DEFAULT_CHECKPOINT.resolve() else f"settings' detector {chosen}"
        return chosen, f"{where} {read_card(chosen).version}"
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def wait_healthy(url: str, timeout_s: float = 300) -> None:
    """Until ``GET {url}/v1/health`` answers 200 (TimeoutError after ``timeout_s``)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the API did not become healthy")
