"""Stage 1 — decode: media → N frames sampled evenly over its duration, plus its metadata."""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass

import numpy as np

from pipeline.batch import Batch, as_text, batch_size, errors_of, object_column
from pipeline.config import DecodeConfig
from pipeline.errors import MediaError, MediaTooLargeError
from pipeline.media import MediaKind, read_media_bytes, sniff_media

log = logging.getLogger(__name__)


@dataclass
class DecodedMedia:
    """Sampled frames (N, H, W, 3 uint8 RGB) with where they sit in the source."""

    frames: np.ndarray
    frame_indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    frame_count: int
    duration: float
    width: int
    height: int
    kind: MediaKind
    mime: str


def sample_indices(frame_count: int, num_frames: int) -> np.ndarray:
    """Evenly spaced frame indices covering the whole video, first and last frame included."""
    if frame_count <= 0:
        return np.zeros(0, dtype=np.int64)
    count = min(num_frames, frame_count)
    return np.unique(np.linspace(0, frame_count - 1, count).round().astype(np.int64))


def _check_pixels(width: int, height: int, config: DecodeConfig) -> None:
    if width <= 0 or height <= 0:
        raise MediaError("media has no picture (zero width or height)")
    if width * height > config.max_pixels:
        raise MediaTooLargeError(f"resolution {width}x{height} is over the {config.max_pixels}-pixel limit")


def _decode_image(data: bytes, mime: str, config: DecodeConfig) -> DecodedMedia:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(image.width, image.height, config)
            image = ImageOps.exif_transpose(image).convert("RGB")
            frame = np.asarray(image, dtype=np.uint8)
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise MediaError(f"corrupt or unreadable image: {exc}") from exc
    height, width = frame.shape[:2]
    return DecodedMedia(frame[None], np.zeros(1, np.int64), np.zeros(1, np.float32), 0.0, 1, 0.0,
                        width, height, "image", mime)


def _decord_message(exc: Exception) -> str:
    """decord's first error line without its '[hh:mm:ss] /src/file.cc:NN: ' prefixes."""
    return re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(exc).splitlines()[0] if str(exc) else "")[:200]


def _decode_video_decord(data: bytes, mime: str, config: DecodeConfig) -> DecodedMedia:
    import decord

    try:
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:  # noqa: BLE001 - decord raises DECORDError / RuntimeError
        raise MediaError(f"corrupt or unreadable video: {_decord_message(exc)}") from exc
    frame_count = len(reader)
    if frame_count == 0:
        raise MediaError("video has no frames")
    try:
        height, width = reader[0].shape[:2]
    except Exception as exc:  # noqa: BLE001 - a corrupt stream fails on its first frame
        raise MediaError(f"video is corrupt: {_decord_message(exc)}") from exc
    _check_pixels(width, height, config)
    fps = float(reader.get_avg_fps() or 0.0)
    duration = frame_count / fps if fps > 0 else 0.0
    if duration > config.max_duration_s:
        raise MediaTooLargeError(f"video is {duration:.0f} s long, over the {config.max_duration_s:.0f} s limit")
    indices = sample_indices(frame_count, config.num_frames)
    try:
        frames = reader.get_batch(indices.tolist()).asnumpy()
        timestamps = reader.get_frame_timestamp(indices.tolist())[:, 0].astype(np.float32)
    except Exception as exc:  # noqa: BLE001 - truncated streams fail here
        raise MediaError(f"video is truncated or corrupt: {_decord_message(exc)}") from exc
    return DecodedMedia(frames, indices, timestamps, fps, frame_count, duration, width, height, "video", mime)



def _decode_video_pyav(data: bytes, mime: str, config: DecodeConfig) -> DecodedMedia:
    """Fallback decoder (decord has x86_64 wheels only): decodes all frames once, keeps the sampled ones."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            _check_pixels(width, height, config)
            fps = float(stream.average_rate or 0)
            frame_count = stream.frames or 0
            if not frame_count and stream.duration and stream.time_base:
                frame_count = int(float(stream.duration * stream.time_base) * fps)
            duration = frame_count / fps if fps else 0.0
            if duration > config.max_duration_s:
                raise MediaTooLargeError(f"video is {duration:.0f} s long, over the {config.max_duration_s:.0f} s limit")
            decoded = [(f.to_ndarray(format="rgb24"), float(f.time or 0.0)) for f in container.decode(stream)]
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise MediaError(f"corrupt or unreadable video: {exc}") from exc
    if not decoded:
        raise MediaError("video has no frames")
    frame_count = len(decoded)
    duration = frame_count / fps if fps else 0.0
    indices = sample_indices(frame_count, config.num_frames)
    frames = np.stack([decoded[i][0] for i in indices])
    timestamps = np.array([decoded[i][1] for i in indices], np.float32)
    return DecodedMedia(frames, indices, timestamps, fps, frame_count, duration, width, height, "video", mime)


def decode_bytes(data: bytes, config: DecodeConfig) -> DecodedMedia:
    """Decode media bytes of any supported type; raises MediaError with a readable reason."""
    if len(data) > config.max_bytes:
        raise MediaTooLargeError(f"media is {len(data)} bytes, over the {config.max_bytes}-byte limit")
    kind, mime = sniff_media(data[:512])
    if kind == "image":
        return _decode_image(data, mime, config)
    try:
        import decord  # noqa: F401
    except ImportError:
        return _decode_video_pyav(data, mime, config)
    return _decode_video_decord(data, mime, config)


class DecodeStage:
    """Batch stage: ``uri`` (+ optional ``data`` bytes) → sampled ``frames`` and media metadata.

    A row that cannot be decoded keeps going through the graph with its ``error`` text set.
    """

    def __init__(self, config: DecodeConfig | None = None, storage_options: dict | None = None):
        self.config = config or DecodeConfig()
        self.storage_options = storage_options or {}

    def decode_one(self, uri: str, data: bytes | None = None) -> DecodedMedia:
        if data is None:
            data = read_media_bytes(uri, self.config.max_bytes, self.storage_options)
        return decode_bytes(bytes(data), self.config)

    def __call__(self, batch: Batch) -> Batch:
        n = batch_size(batch)
        uris = [as_text(u) for u in batch["uri"]]
        datas = list(batch["data"]) if "data" in batch else [None] * n
        errors = errors_of(batch)
        decoded: list[DecodedMedia | None] = []
        elapsed: list[float] = []
        for i in range(n):
            start = time.perf_counter()
            item = None
            if not errors[i]:
                try:
                    item = self.decode_one(uris[i], datas[i])
                except MediaError as exc:
                    errors[i] = str(exc)
                    log.warning("decode failed for %s: %s", uris[i], exc)
                except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
                    errors[i] = f"decode failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    log.exception("decode failed for %s", uris[i])
            decoded.append(item)
            elapsed.append((time.perf_counter() - start) * 1000)
        empty = np.zeros((0, 1, 1, 3), np.uint8)
        out = {k: v for k, v in batch.items() if k != "data"}
        out.update(
            frames=object_column(d.frames if d else empty for d in decoded),
            frame_indices=object_column(d.frame_indices if d else np.zeros(0, np.int64) for d in decoded),
            timestamps=object_column(d.timestamps if d else np.zeros(0, np.float32) for d in decoded),
            fps=np.array([d.fps if d else 0.0 for d in decoded], np.float64),
            frame_count=np.array([d.frame_count if d else 0 for d in decoded], np.int64),
            duration=np.array([d.duration if d else 0.0 for d in decoded], np.float64),
            width=np.array([d.width if d else 0 for d in decoded], np.int64),
            height=np.array([d.height if d else 0 for d in decoded], np.int64),
            media_type=object_column(d.mime if d else "" for d in decoded),
            error=object_column(errors),
            decode_ms=np.array(elapsed, np.float64),
        )
        return out
