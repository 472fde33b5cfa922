"""Dense face landmarks for training masks: MediaPipe's face-mesh network (468 points), run with LiteRT.

MTCNN's five points cannot say where a face ends; FaceSwap and Face2Face blend along the jaw and brows,
so self-blends whose masks follow the real outline look more like them (SBI uses dlib's 81 points).
Training only: inference never needs it. The network ships beside this file (Apache-2.0, from the
``mediapipe==0.10.21`` wheel's ``mediapipe/modules/face_landmark/face_landmark.tflite``, sha256 1055cb9d…c814;
LICENSE-mediapipe), so nothing is fetched at run time.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MODEL = Path(__file__).with_name("face_landmark.tflite")
SIZE = 192
ROI_SCALE = 1.5  # MediaPipe widens the detector's box by this before the landmark network
# MediaPipe's face oval (forehead round to chin), then both brows: the points a mask needs
OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149,
        150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 336, 296, 334, 293, 300, 285, 295, 282, 283, 276)
OUTLINE = OVAL + BROWS


class FaceMesh:
    """``mesh(crop, box)`` → (468, 2) float32 points in crop coordinates and the network's face score."""

    def __init__(self, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.net = Interpreter(str(MODEL), num_threads=threads)
        self.net.allocate_tensors()
        self.input = self.net.get_input_details()[0]["index"]
        self.points, self.face = (d["index"] for d in self.net.get_output_details())

    def __call__(self, crop: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        x1, y1, x2, y2 = np.asarray(box, np.float32).reshape(4)
        side = max(x2 - x1, y2 - y1) * ROI_SCALE
        scale = SIZE / side
        # square ROI around the box, resampled to the network's input; outside the crop is edge-padded
        matrix = np.array([[scale, 0, SIZE / 2 - scale * (x1 + x2) / 2],
                           [0, scale, SIZE / 2 - scale * (y1 + y2) / 2]], np.float32)
        roi = cv2.warpAffine(crop, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self.net.set_tensor(self.input, (roi.astype(np.float32) / 255.0)[None])
        self.net.invoke()
        points = self.net.get_tensor(self.points).reshape(468, 3)[:, :2]
        score = float(1 / (1 + np.exp(-self.net.get_tensor(self.face).item())))
        inverse = cv2.invertAffineTransform(matrix)
        return (points @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32), score


def outlines(crops: list[np.ndarray], boxes: list[np.ndarray], threads: int = 1) -> np.ndarray:
    """(N, len(OUTLINE), 2) face outline and brow points of each crop. Two passes, as MediaPipe tracks: the
    second ROI comes from the first pass's points, since MTCNN's box misses on faces that fill the frame."""
    mesh = FaceMesh(threads)
    out = np.zeros((len(crops), len(OUTLINE), 2), np.float32)
    for i, (crop, box) in enumerate(zip(crops, boxes)):
        points, _ = mesh(crop, box)
        points, _ = mesh(crop, _box_of(points))
        out[i] = points[list(OUTLINE)]
    return out


def _box_of(points: np.ndarray) -> np.ndarray:
    """A detector-like box (brows to chin, about 1/1.2 of the oval's height) from mesh points."""
    low, high = points.min(0), points.max(0)
    centre, size = (low + high) / 2, (high - low).max() / 1.2
    return np.concatenate([centre - size / 2, centre + size / 2]).astype(np.float32)
