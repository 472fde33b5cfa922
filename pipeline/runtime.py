"""Which engine runs the classifier network: PyTorch, or ONNX Runtime on CPUs.

On CPU, ONNX Runtime ran the folded Lite0@224 network 1.4x faster than PyTorch eager with the same
single thread and the same outputs (to 1e-6; docs/benchmarks.md). The ONNX graph is exported from the
loaded checkpoint when the stage is built (a few seconds, once per process), so the safetensors file and
its card stay the one shipped artefact. GPUs keep PyTorch. Grad-CAM (serve's explanations) always uses
the PyTorch module, which the classifier keeps.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
import torch

from pipeline.errors import RuntimeUnavailableError

Runtime = Literal["auto", "torch", "onnx"]


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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

    def __init__(self, module: torch.nn.Module, input_size: int):
        import onnxruntime

        buffer = io.BytesIO()
        example = torch.zeros(1, 3, input_size, input_size)
        with warnings.catch_warnings():  # the TorchScript exporter: 3 s here against ~25 s for the dynamo one
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buffer, input_names=["pixels"], output_names=["logits"],
                              dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the process's torch setting
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(pixels.cpu().numpy(), np.float32)
        return torch.from_numpy(self.session.run(None, {"pixels": array})[0])
