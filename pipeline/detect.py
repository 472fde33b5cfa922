"""Stage 2 — detect: MTCNN faces on sampled frames → margin crops, boxes, landmarks, tracks."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.batch import Batch, batch_size, codes_of, errors_of, object_column
from pipeline.card import ModelCard
from pipeline.config import DEFAULT_CHECKPOINT, DetectConfig, resolve_device, set_torch_threads
from pipeline.crop import crop_face
from pipeline.errors import DETECT_FAILED, InvalidInputError, row_failure
from pipeline.graph import card_or_none, crop_geometry
from pipeline.keyframes import carry_faces, disputed_midpoints, first_seen_order, keyframe_indices
from pipeline.resize import shrink, working_size
from pipeline.tracking import link_tracks

log = logging.getLogger(__name__)


class ChannelsLast(torch.nn.Module):
    """Runs a network on NHWC input. On CPU PyTorch's convolution and max-pool kernels are ~3x faster in NHWC
    for MTCNN's R-Net and O-Net, which see every candidate box of a batch (~100 per frame); the crops that
    come out are the same (boxes within 1e-4 px; tests/pipeline/test_detect.py)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(x.contiguous(memory_format=torch.channels_last))


def checked_frames(frames) -> np.ndarray:
    """``frames`` as the (N, H, W, 3) uint8 RGB array the detector reads, or InvalidInputError naming what came:
    a cast would turn 0..1 floats into black frames and a grey or RGBA frame crashes inside MTCNN."""
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3 or 0 in array.shape[1:3]:
        raise InvalidInputError(f"frames must be an (N, H, W, 3) uint8 RGB array with H, W >= 1; "
                                f"got shape {array.shape} dtype {array.dtype}")
    return array


class FaceDetector:
    """Batched MTCNN (weights ship inside facenet-pytorch) on downscaled frames, boxes in original pixels.

    Safe to call from several threads: each call passes its own minimum face size to facenet-pytorch's
    ``detect_face`` (``MTCNN.detect`` reads it from the shared object, which a concurrent call would change)."""

    def __init__(self, config: DetectConfig | None = None, device: str = "auto"):
        from facenet_pytorch import MTCNN

        self.config = config or DetectConfig()
        self.device = resolve_device(device)
        self.mtcnn = MTCNN(keep_all=True, device=self.device, select_largest=False, post_process=False)
        if self.device == "cpu":
            for name in ("pnet", "rnet", "onet"):
                setattr(self.mtcnn, name, ChannelsLast(getattr(self.mtcnn, name)))

    def detect(self, frames: np.ndarray, source_size: tuple[int, int] | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For each frame (N, H, W, 3 uint8): (boxes (k, 4), probs (k,), landmarks (k, 5, 2)), filtered, in
        source pixels. ``source_size`` (width, height): the original size when the frames arrive already
        shrunk to the working size (the split scan plan); the working size and the face-size limits follow
        the source, so the result is the same either way.

        Two passes when ``first_pass_min_face_px`` is set: large faces first, then the frames where none was
        found down to ``min_face_px``. So a frame with only small faces is searched as fully as before; small
        faces *beside* a large one are not looked for."""
        frames = checked_frames(frames)
        if len(frames) == 0:
            return []
        first = max(self.config.min_face_px, self.config.first_pass_min_face_px or 0)
        results = self._detect(frames, source_size, first)
        empty = [i for i, (boxes, _, _) in enumerate(results) if len(boxes) == 0]
        if first > self.config.min_face_px and empty:
            for i, found in zip(empty, self._detect(frames[empty], source_size, self.config.min_face_px)):
                results[i] = found
        return results

    def _detect(self, frames: np.ndarray, source_size: tuple[int, int] | None, min_face_px: int):
        width, height = source_size or (frames.shape[2], frames.shape[1])
        scale, small_size = working_size(width, height, self.config.detect_max_side)
        min_size = max(12, int(min_face_px * scale))
        if min(small_size) < min_size:
            # smaller than the smallest face MTCNN looks for: its image pyramid is empty and it crashes
            # (torch.cat of an empty list); no face can be found here, and none would be kept
            return [self._filter(None, None, None, scale) for _ in range(len(frames))]
        from facenet_pytorch.models.utils.detect_face import detect_face

        m, results = self.mtcnn, []
        for start in range(0, len(frames), self.config.batch_size):  # frames of one video share a size: one MTCNN batch
            chunk = shrink(frames[start:start + self.config.batch_size], small_size)
            with torch.inference_mode():
                boxes, points = detect_face(chunk, min_size, m.pnet, m.rnet, m.onet, m.thresholds, m.factor, m.device)
            for b, lm in zip(boxes, points):  # per frame: (k, 5) boxes with their probability last, (k, 5, 2)
                b = np.asarray(b, np.float32).reshape(-1, 5)
                results.append(self._filter(b[:, :4], b[:, 4], lm, scale))
        return results

    def _filter(self, boxes, probs, landmarks, scale: float):
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / scale
        probs = np.asarray(probs, np.float32).reshape(-1)
        landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2) / scale
        sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (probs >= self.config.min_probability) & (sizes >= self.config.min_face_px)
        keep_idx = np.flatnonzero(keep)
        keep_idx = keep_idx[np.argsort(-probs[keep_idx])][: self.config.max_faces_per_frame]
        return boxes[keep_idx], probs[keep_idx], landmarks[keep_idx]


class DetectStage:
    """Batch stage: ``frames`` → per-row face ``crops`` with box, landmarks, probability, frame and track.

    The decoded frames are dropped from the output: only crops travel further down the graph. Crop size and
    margin not given (here or in ``config``) come from ``card``, else ``checkpoint``'s card: the classifier's
    weights were trained on crops of that margin, and score others worse (``pipeline.graph.crop_geometry``).
    """

    def __init__(self, config: DetectConfig | None = None, device: str = "auto", crop_size: int | None = None,
                 torch_threads: int = 0, card: ModelCard | None = None, checkpoint: Path | str = DEFAULT_CHECKPOINT):
        set_torch_threads(torch_threads)
        self.config = config or DetectConfig()
        crop_size = crop_size or self.config.crop_size
        if card is None and (crop_size is None or self.config.margin is None):
            card = card_or_none(checkpoint)  # the crops the weights were trained on (timm's rule), as the graph's
        self.crop_size, self.margin = crop_geometry(crop_size, self.config.margin, card)
        self.detector = FaceDetector(self.config, device)

    def faces_of(self, frames: np.ndarray, source_size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """All faces of one video's sampled frames, cropped and linked into tracks; boxes in source pixels.

        With ``detect_every`` k > 1 MTCNN runs on every k-th frame (and the last), and, bisecting, between
        two detected frames that disagree on the tracks they see; the other frames get their faces carried
        along the tracks (``pipeline.keyframes``)."""
        frames = checked_frames(frames)
        every, iou, gap = self.config.detect_every, self.config.track_iou, self.config.track_max_gap
        if every > 1 and len(frames) > 2:
            keys = keyframe_indices(len(frames), every)
            found = dict(zip(keys.tolist(), self.detector.detect(frames[keys], source_size)))
            while True:  # where two detected frames disagree on who is there, detect between them (bisecting)
                keys = np.array(sorted(found), np.int64)
                extra = disputed_midpoints(keys, [found[k] for k in keys.tolist()], iou, gap)
                if not len(extra):
                    break
                found.update(zip(extra.tolist(), self.detector.detect(frames[extra], source_size)))
            per_frame, tracks_of = carry_faces(keys, [found[k] for k in keys.tolist()], len(frames), iou, gap)
        else:
            per_frame, tracks_of = self.detector.detect(frames, source_size), None
        # the frames may be shrunk (split plan): crops are cut where the source box lies in them
        to_frame = frames.shape[2] / source_size[0] if source_size else 1.0
        crops, frame_ids, boxes, probs, landmarks, tracks = [], [], [], [], [], []
        for frame_id, (b, p, lm) in enumerate(per_frame):
            for j, (box, prob, points) in enumerate(zip(b, p, lm)):
                try:
                    crop, _ = crop_face(frames[frame_id], box * to_frame, self.crop_size, self.margin)
                except ValueError:
                    continue
                crops.append(crop)
                frame_ids.append(frame_id)
                boxes.append(box)
                probs.append(prob)
                landmarks.append(points)
                tracks.append(tracks_of[frame_id][j] if tracks_of is not None else -1)
        frame_ids_arr = np.array(frame_ids, np.int64)
        boxes_arr = np.array(boxes, np.float32).reshape(-1, 4)
        return {
            "crops": np.stack(crops) if crops else np.zeros((0, self.crop_size, self.crop_size, 3), np.uint8),
            "face_frame": frame_ids_arr,
            "face_boxes": boxes_arr,
            "face_landmarks": np.array(landmarks, np.float32).reshape(-1, 5, 2),
            "face_probs": np.array(probs, np.float32),
            "face_track": (link_tracks(frame_ids_arr, boxes_arr, iou, gap)
                           if tracks_of is None else first_seen_order(np.array(tracks, np.int64))),
        }

    def __call__(self, batch: Batch) -> Batch:
        n = batch_size(batch)
        errors, codes = errors_of(batch), codes_of(batch)
        per_row: list[dict[str, np.ndarray]] = []
        elapsed = []
        for i in range(n):
            start = time.perf_counter()
            frames = batch["frames"][i]
            if errors[i] or frames is None or len(frames) == 0:
                per_row.append(no_faces(self.crop_size))
            else:
                try:
                    source = (int(batch["width"][i]), int(batch["height"][i])) if "width" in batch else None
                    per_row.append(self.faces_of(frames, source if source and source[0] > 0 else None))
                except Exception as exc:  # noqa: BLE001 - one bad video never stops the batch
                    errors[i], codes[i] = row_failure(exc, DETECT_FAILED, "face detection", batch["uri"][i], log)
                    per_row.append(no_faces(self.crop_size))
            elapsed.append((time.perf_counter() - start) * 1000)
        return detected(batch, per_row, errors, codes, elapsed)


def no_faces(crop_size: int) -> dict[str, np.ndarray]:
    """``faces_of``'s answer for a row without faces (or without frames, or failed)."""
    return {"crops": np.zeros((0, crop_size, crop_size, 3), np.uint8), "face_frame": np.zeros(0, np.int64),
            "face_boxes": np.zeros((0, 4), np.float32), "face_landmarks": np.zeros((0, 5, 2), np.float32),
            "face_probs": np.zeros(0, np.float32), "face_track": np.zeros(0, np.int64)}


def detected(batch: Batch, per_row: list[dict[str, np.ndarray]], errors: list[str], codes: list[str],
             elapsed: list[float]) -> Batch:
    """The detect stage's output batch: the input less its frames, plus each row's faces and errors."""
    out = {k: v for k, v in batch.items() if k != "frames"}
    for key in per_row[0] if per_row else []:
        out[key] = object_column(row[key] for row in per_row)
    out["frames_sampled"] = np.array([len(f) if f is not None else 0 for f in batch["frames"]], np.int64)
    out["error"] = object_column(errors)
    out["error_code"] = object_column(codes)
    out["detect_ms"] = np.array(elapsed, np.float64)
    return out


def failed_detection(batch: Batch, crop_size: int, message: str, code: str) -> Batch:
    """Every row of ``batch`` failed with ``message``/``code`` (rows that had failed keep their own error):
    for a front end whose detector could not be built, so its rows still flow to a typed error."""
    errors, codes = errors_of(batch), codes_of(batch)
    n = batch_size(batch)
    return detected(batch, [no_faces(crop_size)] * n, [e or message for e in errors],
                    [c if e else code for e, c in zip(errors, codes)], [0.0] * n)
