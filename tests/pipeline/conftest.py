"""Fixtures the pipeline's media tests share: the bundled astronaut photo and a CPU face detector."""

from __future__ import annotations

import pytest
from PIL import Image

from pipeline.config import DetectConfig
from pipeline.detect import FaceDetector


@pytest.fixture(scope="module")
def astronaut(samples_dir) -> Image.Image:
    return Image.open(samples_dir / "astronaut.jpg").convert("RGB")


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectConfig(), device="cpu")
