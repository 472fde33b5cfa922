"""Stage 1 — decode: media → N frames sampled evenly over its duration, plus its metadata."""

from __future__ import annotations

import functools
import io
import logging
import re
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from pipeline.aspect import sample_aspect, square_pixels, stored_shape
from pipeline.batch import Batch, as_text, batch_size, codes_of, errors_of, object_column
from pipeline.config import DecodeConfig
from pipeline.errors import DECODE_FAILED, MediaError, MediaTooLargeError
from pipeline.logsafe import log_safe
from pipeline.media import MediaKind, read_media_bytes, sniff_media
from pipeline.probe import VideoInfo, check_duration, check_pixels, main_video_stream, probe_video
from pipeline.resize import shrink, working_size
from pipeline.seek import seek_plan

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


def image_to_rgb(image) -> np.ndarray:
    """A PIL image in any mode PNG, JPEG or WebP produce → (H, W, 3) uint8 RGB.

    16-bit grey is scaled to 8 bits (PIL's own conversion clips it, turning most pixels white);
    transparency is composited over white (dropping alpha would show whatever colour transparent pixels
    happen to hold, often black); CMYK, palette, 1-bit and grey go through PIL's conversion.
    """
    from PIL import Image

    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


@functools.cache
def _heif_opener() -> None:
    """Teach PIL to open HEIC (AVIF it reads itself); pi-heif is libheif's decode-only build (no GPL encoder)."""
    import pi_heif

    pi_heif.register_heif_opener()


def _decode_image(data: bytes, mime: str, config: DecodeConfig) -> DecodedMedia:
    from PIL import Image, ImageOps

    if mime == "image/heic":
        _heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as image:
            check_pixels(image.width, image.height, config)
            frame = image_to_rgb(ImageOps.exif_transpose(image))
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaTooLargeError(f"image is a decompression bomb: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise MediaError(f"corrupt or unreadable image: {exc}") from exc
    height, width = frame.shape[:2]
    return DecodedMedia(frame[None], np.zeros(1, np.int64), np.zeros(1, np.float32), 0.0, 1, 0.0,
                        width, height, "image", mime)


def _decord_message(exc: Exception) -> str:
    """decord's first error line without its '[hh:mm:ss] /src/file.cc:NN: ' prefixes."""
    return re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(exc).splitlines()[0] if str(exc) else "")[:200]


def _decode_video_decord(data: bytes, mime: str, config: DecodeConfig, info: VideoInfo | None = None) -> DecodedMedia:
    import decord

    info = info or probe_video(data, config)  # decord's reader decodes on open: check limits first
    try:
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:  # noqa: BLE001 - decord raises DECORDError / RuntimeError
        raise MediaError(f"corrupt or unreadable video: {_decord_message(exc)}") from exc
    frame_count = len(reader)
    if frame_count == 0:
        raise MediaError("video has no frames")
    fps = float(reader.get_avg_fps() or info.fps or 0.0)
    duration = frame_count / fps if fps > 0 else 0.0
    check_duration(duration, config)
    indices = sample_indices(frame_count, config.num_frames)
    try:
        frames = reader.get_batch(indices.tolist()).asnumpy()
        timestamps = reader.get_frame_timestamp(indices.tolist())[:, 0].astype(np.float32)
    except Exception as exc:  # noqa: BLE001 - truncated streams fail here
        # decord's text here depends on which of its decoder threads hit the damage first: log it, but keep
        # the row's message stable so a rescan or the API says the same thing about the same file
        log.debug("decord failed mid-stream: %s", _decord_message(exc))
        raise MediaError("video is truncated or corrupt: frames could not be decoded") from exc
    height, width = frames.shape[1:3]
    check_pixels(width, height, config)  # a stream may change size after its header
    sar, turned = stored_shape(data)  # decord turns frames for display but leaves anamorphic pixels as stored
    if sar != 1:
        frames = square_pixels(frames, sar, config, turned)
        height, width = frames.shape[1:3]
    return DecodedMedia(frames, indices, timestamps, fps, frame_count, duration, width, height, "video", mime)


# containers with an index to seek by; elsewhere (MPEG-TS, raw streams) a seek lands by estimate
_SEEKABLE = ("mov", "mp4", "matroska", "webm")


def _packet_index(data: bytes) -> tuple[int, list[int] | None, list[int]]:
    """(frames, presentation times in display order, keyframes' times) of the video stream a player shows,
    by demuxing only; the times are None when a packet has none (then frames can only be matched by counting
    as they decode), and keyframes are listed only where the container can be seeked by its index.
    The count serves containers that store none (WebM)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(main_video_stream(container)) if p.size]
        seekable = any(name in _SEEKABLE for name in container.format.name.split(","))
    if any(t is None for t, _ in packets):
        return len(packets), None, []
    return len(packets), sorted(t for t, _ in packets), sorted(t for t, key in packets if key) if seekable else []


def _one_field(rgb: np.ndarray) -> np.ndarray:
    """The top field with the lines between interpolated. An interlaced frame weaves two fields shot 1/50 s
    apart, so a moving face combs, and combing reads like a blending seam to the detector (a woven FF++ real
    scored FAKE, 0.59 against 0.49 progressive). Spatial only: the frames around a sampled one are not decoded."""
    top = rgb[0::2].astype(np.uint16)
    odd = rgb.shape[0] // 2
    below = np.concatenate([top[1:], top[-1:]])[:odd]  # the last line repeats the one above it
    out = rgb.copy()
    out[1::2] = ((top[:odd] + below + 1) >> 1).astype(np.uint8)
    return out


def _frame_rgb(frame, sar: Fraction, config: DecodeConfig) -> np.ndarray:
    """The frame as RGB, as a player shows it: interlaced frames as one field, pixels made square
    (``pipeline/aspect.py``), turned as the stream's display matrix says (phones store portrait video
    sideways and tag it; decord applies the tag, PyAV leaves it to us, and a sideways face is one MTCNN
    does not find)."""
    rgb = frame.to_ndarray(format="rgb24")
    if frame.interlaced_frame:
        rgb = _one_field(rgb)
    rgb = square_pixels(rgb[None], sar, config)[0]  # the ratio is the stored frame's, so before turning
    turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise quarter turns, as np.rot90 counts them
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _runs(targets: list[int], plan: list[int | None]) -> list[tuple[int | None, set[int]]]:
    """The targets cut where the plan jumps: (keyframe to seek to or None, the targets decoded from there)."""
    runs: list[tuple[int | None, set[int]]] = []
    for target, jump in zip(targets, plan):
        if not runs or jump is not None:
            runs.append((jump, set()))
        runs[-1][1].add(target)
    return runs


def _sampled_frames(data: bytes, config: DecodeConfig, indices: np.ndarray, pts: list[int] | None,
                    keyframes: list[int] | None = None) -> tuple[dict, int]:
    """{frame index: (RGB frame, time s)} for the sampled ``indices``, and how many frames were decoded.

    With ``pts`` (display-order timestamps) frames are matched by timestamp, frames nothing references
    are skipped unless sampled, and with ``keyframes`` long stretches between samples are jumped over
    (``pipeline/seek.py``); without, every frame up to the last sampled one is decoded and counted."""
    import av

    wanted = {pts[i]: i for i in indices.tolist()} if pts is not None else {i: i for i in indices.tolist()}
    targets = sorted(wanted)
    plan = seek_plan(targets, pts, keyframes) if pts is not None and keyframes else [None] * len(targets)
    kept: dict[int, tuple[np.ndarray, float]] = {}
    decoded = 0
    # max_pixels: the decoder refuses a frame that grows past the limit mid-stream
    with av.open(io.BytesIO(data), options={"max_pixels": str(config.max_pixels)}) as container:
        stream = main_video_stream(container)
        # Frame threads keep per-packet skip decisions: FFmpeg copies skip_frame into the worker thread's
        # context as each packet is submitted (tests/pipeline/test_decode.py checks frames against decord's).
        threads = 1 if config.threads is None else config.threads
        stream.thread_type = "SLICE" if threads == 1 else "FRAME"
        stream.thread_count = threads
        context = stream.codec_context
        sar = sample_aspect(stream)
        for jump, run in _runs(targets, plan):
            if jump is not None:  # lands on that keyframe, with no frame of before it left in the decoder
                container.seek(jump, stream=stream, backward=True)
                context.flush_buffers()
            for packet in container.demux(stream):
                if pts is not None:
                    context.skip_frame = "DEFAULT" if not packet.size or packet.pts in wanted else "NONREF"
                for frame in packet.decode():
                    key = frame.pts if pts is not None else decoded
                    if key in wanted:
                        kept[wanted[key]] = (_frame_rgb(frame, sar, config), float(frame.time or 0.0))
                    decoded += 1
                if all(wanted[t] in kept for t in run):
                    break
    return kept, decoded


def _decode_video_pyav(data: bytes, mime: str, config: DecodeConfig, info: VideoInfo | None = None) -> DecodedMedia:
    """Decodes up to the last sampled frame and keeps only the sampled ones as RGB, so memory holds
    ``num_frames`` frames, not the whole video. Where samples lie far apart (long videos) it seeks to the
    keyframe before the next one instead of decoding on (``pipeline/seek.py``; same frames).

    Frames that no other frame references (most B-frames: about half of an x264 stream) are skipped unless
    they are sampled, so 32 frames of a 10 s 720p FF++ clip decode in 0.6-1.5 s instead of 1.3-2.0 s
    (docs/benchmarks.md), bit-identical to decoding everything (tests/pipeline/test_decode.py). Streams
    without timestamps, or whose frames do not carry their packets' timestamps, are decoded in full."""
    info = info or probe_video(data, config)
    try:
        packets, pts, keyframes = _packet_index(data)
        frame_count = len(pts) if pts else (info.frame_count or packets)
        indices = sample_indices(frame_count, config.num_frames)
        kept, decoded = _sampled_frames(data, config, indices, pts or None, keyframes)
        if pts and len(kept) < len(indices):  # timestamps that do not match up: count frames instead
            kept, decoded = _sampled_frames(data, config, indices, None)
            pts = None
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - av raises InvalidDataError and friends
        raise MediaError(f"corrupt or unreadable video: {str(exc)[:200]}") from exc
    if not kept:
        raise MediaError("video has no frames")
    if not pts and decoded < frame_count:  # the container promised more frames than the stream holds
        frame_count = decoded
    fps = info.fps
    duration = frame_count / fps if fps else 0.0
    order = sorted(kept)
    frames = np.stack([kept[i][0] for i in order])
    height, width = frames.shape[1:3]
    check_pixels(width, height, config)
    return DecodedMedia(frames, np.array(order, np.int64), np.array([kept[i][1] for i in order], np.float32),
                        fps, frame_count, duration, width, height, "video", mime)


def decode_bytes(data: bytes, config: DecodeConfig) -> DecodedMedia:
    """Decode media bytes of any supported type; raises MediaError with a readable reason."""
    if len(data) > config.max_bytes:
        raise MediaTooLargeError(f"media is {len(data)} bytes, over the {config.max_bytes}-byte limit")
    kind, mime = sniff_media(data[:512])
    if kind == "image":
        return _decode_image(data, mime, config)
    info = probe_video(data, config)  # limits from the headers, before any frame buffer exists
    if config.backend == "decord" and mime != "video/mp2t":  # decord cannot read MPEG-TS from memory at all
        try:
            import decord  # noqa: F401
        except ImportError:  # decord has x86_64 wheels only
            return _decode_video_pyav(data, mime, config, info)
        return _decode_video_decord(data, mime, config, info)
    return _decode_video_pyav(data, mime, config, info)


class DecodeStage:
    """Batch stage: ``uri`` (+ optional ``data`` bytes) → sampled ``frames`` and media metadata.

    A row that cannot be decoded keeps going through the graph with its ``error`` text set. ``max_side``
    shrinks the frames to the detector's working size (``pipeline.resize``) when they leave this process
    (the split scan plan); ``width``/``height`` stay the source's.
    """

    def __init__(self, config: DecodeConfig | None = None, storage_options: dict | None = None,
                 max_side: int | None = None):
        self.config = config or DecodeConfig()
        self.storage_options = storage_options or {}
        self.max_side = max_side

    def decode_one(self, uri: str, data: bytes | None = None) -> DecodedMedia:
        if data is None:
            data = read_media_bytes(uri, self.config.max_bytes, self.storage_options)
        decoded = decode_bytes(bytes(data), self.config)
        if self.max_side:
            decoded.frames = shrink(decoded.frames, working_size(decoded.width, decoded.height, self.max_side)[1])
        return decoded

    def __call__(self, batch: Batch) -> Batch:
        n = batch_size(batch)
        uris = [as_text(u) for u in batch["uri"]]
        datas = list(batch["data"]) if "data" in batch else [None] * n
        errors, codes = errors_of(batch), codes_of(batch)
        decoded: list[DecodedMedia | None] = []
        elapsed: list[float] = []
        for i in range(n):
            start = time.perf_counter()
            item = None
            if not errors[i]:
                try:
                    item = self.decode_one(uris[i], datas[i])
                except MediaError as exc:
                    errors[i], codes[i] = str(exc), exc.code
                    log.warning("decode failed for %s: %s", log_safe(uris[i]), log_safe(exc))
                except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
                    errors[i] = f"decode failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    codes[i] = DECODE_FAILED
                    log.exception("decode failed for %s", log_safe(uris[i]))
            decoded.append(item)
            elapsed.append((time.perf_counter() - start) * 1000)
        return self._output(batch, decoded, errors, codes, elapsed)

    @staticmethod
    def _output(batch: Batch, decoded: list[DecodedMedia | None], errors: list[str], codes: list[str],
                elapsed: list[float]) -> Batch:
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
            error_code=object_column(codes),
            decode_ms=np.array(elapsed, np.float64),
        )
        return out
