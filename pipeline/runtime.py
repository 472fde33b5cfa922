"""Which engine runs the classifier network: PyTorch, or ONNX Runtime on CPUs.

On CPU, ONNX Runtime ran the folded Lite0@224 network 1.4x faster than PyTorch eager with the same
single thread and the same outputs (to 1e-6; docs/benchmarks.md). The ONNX graph is exported from the
loaded checkpoint when the stage is built (about 3 s), so the safetensors file and its card stay the one
shipped artefact; the exported graph is cached on disk under a hash of the weights (``classify.onnx_cache``),
so later processes (scan actors, serve replicas, the next ``score``) load it instead; the ``CACHE_ENTRIES`` most
recently used graphs are kept (~14 MB each, one per checkpoint scored). Where that folder cannot be written (a
read-only home), graphs go to this user's folder under the temp dir (``config.temp_onnx_cache``), used only while it
is this user's alone: another user could otherwise plant a graph there. GPUs keep PyTorch. Grad-CAM (serve's explanations) always uses
the PyTorch module, which the classifier keeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pipeline.atomic import write_atomic
from pipeline.config import Runtime, temp_onnx_cache
from pipeline.errors import RuntimeUnavailableError

OPSET = 17
CACHE_ENTRIES = 8  # graphs kept in the cache: every checkpoint evaluated or scored adds one
log = logging.getLogger(__name__)


def onnx_available() -> bool:
    """Both packages installed (the exporter needs onnx). Found, not imported: ``import onnx`` costs ~1 s of
    every process's start-up on 2 cores (ml_dtypes), and a process that finds its graph cached never needs it."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def resolve_runtime(runtime: Runtime, device: str | torch.device) -> Literal["torch", "onnx"]:
    """``auto``: ONNX Runtime on CPU when it is installed, else PyTorch."""
    device = torch.device(device)
    if runtime == "onnx" and device.type != "cpu":
        raise RuntimeUnavailableError(f"classify.runtime onnx runs on CPU only, not on {device}; use torch or auto")
    if runtime == "onnx" and not onnx_available():
        raise RuntimeUnavailableError("classify.runtime onnx needs the onnx and onnxruntime packages (pip install onnx onnxruntime)")
    if runtime == "auto":
        return "onnx" if device.type == "cpu" and onnx_available() else "torch"
    return runtime


class OnnxNetwork:
    """A torch module exported to ONNX and run by ONNX Runtime: float32 NCHW pixels → float32 logits."""

    def __init__(self, module: torch.nn.Module, input_size: int, cache_dir: Path | str | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the process's torch setting
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        key = graph_key(module, input_size) if cache_dir else ""
        for cached in _entries(Path(cache_dir), key) if cache_dir else ():
            if not cached.is_file():
                continue
            try:
                self.session = onnxruntime.InferenceSession(cached.read_bytes(), options, providers=["CPUExecutionProvider"])
                self.source = "cache"
                with contextlib.suppress(OSError):  # used now: the last to be pruned (a read-only cache still serves)
                    os.utime(cached)
                return
            except Exception as exc:  # noqa: BLE001 - a damaged cache entry (or one pruned meanwhile) is re-exported
                log.warning("ONNX cache entry %s unreadable (%s); exporting again", cached, type(exc).__name__)
        graph = export_onnx(module, input_size)
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.source = "export"
        if cache_dir:
            _cache(Path(cache_dir) / f"{key}.onnx", graph)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(pixels.cpu().numpy(), np.float32)
        return torch.from_numpy(self.session.run(None, {"pixels": array})[0])


def graph_key(module: torch.nn.Module, input_size: int) -> str:
    """Hash of the weights, the normalisation, the input size and the exporter's version: equal keys export equal
    graphs.

    The module's own (folded) weights are hashed, not the checkpoint file, so a change in how the graph is
    built from a card invalidates its entry too; ~30 ms for Lite0, once per model load. The card's normalisation
    lives in buffers that are not in the state dict, so it is hashed on its own."""
    digest = hashlib.sha256(f"{torch.__version__}|opset{OPSET}|{input_size}".encode())
    norm = getattr(module, "normalisation", None)
    if norm is not None:
        digest.update(norm.model_dump_json().encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def export_onnx(module: torch.nn.Module, input_size: int) -> bytes:
    buffer = io.BytesIO()
    example = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():  # the TorchScript exporter: 3 s here against ~25 s for the dynamo one
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, input_names=["pixels"], output_names=["logits"],
                          dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return buffer.getvalue()


SETTING = "classify.onnx_cache (DFS_CLASSIFY__ONNX_CACHE) or XDG_CACHE_HOME"  # what a warning tells to set


def _entries(folder: Path, key: str) -> list[Path]:
    """Where the graph ``key`` may be cached, in order: ``folder``, then, where ``folder`` cannot be written (a
    read-only home), the temp dir's fallback, where an earlier process would have cached it. The fallback only while
    it is this user's alone (``_private``)."""
    fallback = _fallback()
    if folder == fallback:  # no home: the default
        return [folder / f"{key}.onnx"] if _private(fallback.parent) else []
    if fallback is None or _writable(folder) or not _private(fallback.parent, make=False):
        return [folder / f"{key}.onnx"]
    return [folder / f"{key}.onnx", fallback / f"{key}.onnx"]


def _fallback() -> Path | None:
    try:
        return temp_onnx_cache()
    except OSError:  # no writable temp dir
        return None


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _private(top: Path, make: bool = True) -> bool:
    """``top`` (the temp dir's ``deepfakestream-<uid>``) made (``make``) or found a folder of this user's that no one
    else may enter: not a link, ours, mode 0700 or narrower. Anything else there is never read: it could hold a
    graph another user planted."""
    try:
        if make:
            top.mkdir(mode=0o700, exist_ok=True)
        info = top.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def _cache(path: Path, data: bytes) -> None:
    """Temp file + rename: actors starting together never read half a graph. Where ``path``'s folder cannot be
    written (read-only home), the temp dir's fallback (this user's alone) takes it, so only this process pays the
    export; where that fails too, every process does."""
    fallback = _fallback()
    try:
        if path.parent == fallback and not _private(fallback.parent):
            raise PermissionError(f"{fallback.parent} is not a folder of this user's alone")
        write_atomic(path, data)
    except OSError as exc:
        if fallback is not None and path.parent != fallback and _private(fallback.parent):
            with contextlib.suppress(OSError):
                write_atomic(fallback / path.name, data)
                log.warning("cannot cache the ONNX graph in %s (%s): cached in %s instead; set %s to a writable folder",
                            path.parent, exc, fallback, SETTING)
                _prune(fallback, CACHE_ENTRIES)
                return
        log.warning("cannot cache the ONNX graph in %s (%s): every process exports it again (~3 s); set %s to a "
                    "writable folder", path.parent, exc, SETTING)
        return
    _prune(path.parent, CACHE_ENTRIES)


_GRAPH_NAME = re.compile(r"[0-9a-f]{32}\.onnx")  # graph_key's 32 hex digits: what this cache writes


def _prune(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used graphs (by mtime: written, or last loaded). Another process may
    be pruning or reading too: an entry already gone is skipped, one that cannot be removed is left, and a reader
    that opened a graph before it was removed reads it whole (one that finds it gone exports it again)."""
    entries = []
    for path in folder.glob("*.onnx"):  # not the writers' hidden temp files
        if not _GRAPH_NAME.fullmatch(path.name):  # the folder may be shared (classify.onnx_cache): only our graphs
            continue
        with contextlib.suppress(FileNotFoundError):
            entries.append((path.stat().st_mtime_ns, path))
    for _, path in sorted(entries, reverse=True)[keep:]:
        with contextlib.suppress(OSError):
            path.unlink()
