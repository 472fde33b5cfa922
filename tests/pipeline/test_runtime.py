"""The classifier's engines (pipeline/runtime.py): ONNX Runtime scores real crops as PyTorch does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import photo_crops
from pipeline.checkpoint import load_checkpoint
from pipeline.classify import FaceClassifier
from pipeline.config import load_settings
from pipeline.errors import RuntimeUnavailableError
from pipeline.graph import stage_specs
from pipeline.runtime import onnx_available, resolve_runtime

ROOT = Path(__file__).resolve().parents[2]
needs_onnx = pytest.mark.skipif(not onnx_available(), reason="onnx/onnxruntime not installed")


@needs_onnx
@pytest.mark.parametrize("tta_flip", [False, True])
def test_onnx_runtime_scores_the_shipped_detector_as_torch(tta_flip):
    model, card = load_checkpoint(ROOT / "pipeline" / "checkpoints" / "detector.safetensors")
    crops = photo_crops(card.architecture.input_size, count=5)  # 5 with batches of 2: a short last batch
    torch_scores = FaceClassifier(model, card, "cpu", batch_size=2, tta_flip=tta_flip, runtime="torch").predict(crops)
    onnx = FaceClassifier(model, card, "cpu", batch_size=2, tta_flip=tta_flip, runtime="onnx")
    assert onnx.runtime == "onnx" and isinstance(onnx.model, torch.nn.Module)  # Grad-CAM keeps the module
    assert torch_scores.std() > 0.01  # real, varied scores, so agreement means something
    np.testing.assert_allclose(onnx.predict(crops), torch_scores, atol=1e-5)


def test_auto_picks_onnx_on_cpu_only_and_onnx_refuses_a_gpu():
    assert resolve_runtime("auto", torch.device("cpu")) == ("onnx" if onnx_available() else "torch")
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    assert resolve_runtime("torch", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeUnavailableError) as error:
        resolve_runtime("onnx", torch.device("cuda"))
    assert error.value.code == "runtime_unavailable"


def test_the_setting_reaches_the_score_stage():
    spec = stage_specs(load_settings(**{"classify.runtime": "torch"}))[-1]
    assert spec.kwargs["runtime"] == "torch"
    with pytest.raises(ValueError, match="runtime"):
        load_settings(**{"classify.runtime": "tensorrt"})
