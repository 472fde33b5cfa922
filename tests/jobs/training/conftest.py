"""Fixtures of the training tests; training_fixtures beside this file holds the plain helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # training_fixtures beside this file


@pytest.fixture(scope="session")  # four modules use it: one MTCNN pass, not one per module
def astronaut_face(samples_dir):
    """The bundled astronaut photo's face crop with MTCNN's box and landmarks in crop coordinates (read only)."""
    from pipeline.config import DecodeConfig, DetectConfig
    from pipeline.crop import crop_face
    from pipeline.decode import decode_bytes
    from pipeline.detect import FaceDetector

    frame = decode_bytes((samples_dir / "astronaut.jpg").read_bytes(), DecodeConfig()).frames[0]
    (boxes, _, landmarks), = FaceDetector(DetectConfig(), "cpu").detect(frame[None])
    crop, transform = crop_face(frame, boxes[0], 160, 0.3)
    box = transform.apply(boxes[0].reshape(2, 2)).reshape(4)
    return crop, box, transform.apply(landmarks[0])
