"""Stage 1 — decode: media → N frames sampled evenly over its duration, plus its metadata."""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice

import numpy as np

from pipeline.aspect import sample_aspect, square_pixels, stored_shape
from pipeline.batch import Batch, as_text, batch_size, codes_of, errors_of, object_column
from pipeline.config import DecodeConfig
from pipeline.errors import DECODE_FAILED, MediaError, MediaTooLargeError, media_errors, row_failure
from pipeline.frames import SampledFrames
from pipeline.media import MediaKind, read_media_bytes, sniff_media
from pipeline.probe import VideoInfo, check_duration, check_frames, check_pixels, main_video_stream, probe_video
from pipeline.resize import shrink, working_size
from pipeline.seek import frames_decoded, seek_plan
from pipeline.work import Deadline, DecodeWork

log = logging.getLogger(__name__)


@dataclass
class DecodedMedia:
    """Sampled frames (N, H, W, 3 uint8 RGB) with where they sit in the source: ``timestamps`` in seconds from
    the stream's start, ``frame_indices`` among the frames a player shows. ``width``/``height`` are the first
    sampled frame's; a stream that changes size later has its later frames (each within ``max_pixels``) rescaled
    to it (``pipeline/frames.py``). A photo over ``max_pixels`` keeps its own size there, its one frame scaled down
    (``pipeline/images.py``)."""

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


def sample_times(times: np.ndarray, num_frames: int) -> np.ndarray:
    """Frames (positions in ``times``: each frame's start, ascending) nearest to ``num_frames`` times spaced
    evenly from the first frame to the last. Where frame numbers already sit within a frame of those times
    (a constant rate, timestamp jitter included) they are kept, so constant-rate video samples exactly the
    frames it always did; variable-rate video (phones slow down in the dark, screen recordings idle at 1 fps)
    would otherwise crowd the samples into its fast stretches. A frame held longer than the spacing is
    sampled once, so fewer than ``num_frames`` may come back; a stream of no more frames than that gives them all."""
    indices = sample_indices(len(times), num_frames)
    if len(times) <= num_frames:  # every frame fits: snapping to even times would only merge neighbours
        return indices
    times = np.asarray(times, np.float64)
    even = np.linspace(times[0], times[-1], len(indices)) if len(indices) else times[:0]
    if len(indices) < 3 or np.all(np.abs(times[indices] - even) <= np.median(np.diff(times))):
        return indices
    after = np.searchsorted(times, even).clip(1, len(times) - 1)
    return np.unique(np.where(even - times[after - 1] <= times[after] - even, after - 1, after))


def _duration(times: np.ndarray, frame_count: int, fps: float) -> float:
    """Seconds from the first frame's start to the last one's end (shown for the usual gap between frames),
    from the timestamps where there are any: frame_count / fps is wrong for variable-rate video."""
    if len(times) > 1:
        return round(float(times[-1] - times[0] + np.median(np.diff(times))), 6)
    return frame_count / fps if fps else 0.0


def _decord_message(exc: Exception) -> str:
    """decord's first error line without its '[hh:mm:ss] /src/file.cc:NN: ' prefixes."""
    return re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(exc).splitlines()[0] if str(exc) else "")[:200]


def _mid_stream(exc: Exception) -> str:
    """decord's text here depends on which of its decoder threads hit the damage first: logged, while the row's
    message stays the same, so a rescan or the API says the same thing about the same file."""
    log.debug("decord failed mid-stream: %s", _decord_message(exc))
    return "frames could not be decoded (truncated or damaged)"


def _decord_times(reader, config: DecodeConfig) -> np.ndarray | None:
    """Every frame's start in seconds, from decord's index; None where it holds none that can be true: frames
    without a timestamp (AVI, MPEG-PS: decord sorts those first, at about -1e14 s, so its frame numbers are not
    the display order), a Matroska of 1-3 frames (9.2e15 s: its "no time"), anything past any allowed duration."""
    times = reader.get_frame_timestamp(list(range(len(reader))))[:, 0].astype(np.float64)
    return times if np.isfinite(times).all() and np.abs(times).max() <= config.max_duration_s else None


def _decode_video_decord(data: bytes, mime: str, config: DecodeConfig, info: VideoInfo | None = None,
                         work: DecodeWork | None = None) -> DecodedMedia:
    import decord

    info = info or probe_video(data, config)  # decord's reader decodes on open: check limits first
    work = work or DecodeWork(config)
    with media_errors("video", _decord_message):  # decord raises DECORDError / RuntimeError
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    if len(reader) == 0:
        raise MediaError("video has no frames")
    check_frames(len(reader), config)  # counted by the index: a header may state no count (streamed Matroska)
    times = _decord_times(reader, config)
    if times is None or times[0] < 0:
        # No timestamps (AVI, MPEG-PS): decord's numbers put those frames first, not in display order. A lead-in
        # (an MP4 trimmed without re-encoding): decord counts the frames its edit list cuts, so its numbers drift
        # by the cut depending on how it reads. PyAV gets both right.
        return _decode_video_pyav(data, mime, config, info, work)
    frame_count = len(reader)
    fps = float(reader.get_avg_fps() or info.fps or 0.0)
    duration = _duration(times, frame_count, fps)
    check_duration(duration, config)
    indices = sample_times(times, config.num_frames)
    targets, numbers = indices.tolist(), range(frame_count)
    # decord jumps to a target's keyframe whenever it lies past the frame it is at
    plan = seek_plan(targets, numbers, reader.get_key_indices(), min_skip=0)
    work.plan(frames_decoded(targets, numbers, plan), info.width, info.height, "video")
    sampled = SampledFrames(len(targets))
    with media_errors("video", _mid_stream):  # truncated streams fail here
        for slot, index in enumerate(targets):  # one by one, as get_batch reads them: the deadline is checked between
            work.check_deadline()
            sampled.put(slot, reader.get_batch([index]).asnumpy()[0])
        frames = sampled.array
        timestamps = times[indices].astype(np.float32)
    height, width = frames.shape[1:3]
    # The first frame's size, which the header may misstate. decord fits later frames to it unchecked, whatever their
    # own size (it shows neither that nor FFmpeg's max_pixels): PyAV refuses one that grows past the limit.
    check_pixels(width, height, config)
    sar, turned = stored_shape(data)  # decord turns frames for display but leaves anamorphic pixels as stored
    if sar != 1:
        frames = square_pixels(frames, sar, config, turned)
        height, width = frames.shape[1:3]
    return DecodedMedia(frames, indices, timestamps, fps, frame_count, duration, width, height, "video", mime)


# containers with an index to seek by; elsewhere (MPEG-TS, raw streams) a seek lands by estimate
_SEEKABLE = ("mov", "mp4", "matroska", "webm")


def _index(data: bytes, max_frames: int | None = None) -> tuple[int, list[int] | None, list[int], Fraction, bool]:
    """(frames, presentation times in display order, keyframes' times, time base, reordered) of the video stream a player
    shows, by demuxing only; the times are None when a packet has none (then frames can only be matched by
    counting as they decode), and keyframes are listed only where the container can be seeked by its index.
    The count serves containers that store none (WebM, a streamed Matroska): past ``max_frames`` demuxing stops
    and the video is refused. Packets FFmpeg marks discard (the lead-in an MP4 trimmed without re-encoding keeps
    before its edit list's start) are decoded but never shown: not frames. ``reordered``: some frame is shown
    before one decoded ahead of it (B-frames, mostly referenced by nothing: the decoder can skip them)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = main_video_stream(container)
        shown = ((p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and not p.is_discard)
        packets = list(islice(shown, None if max_frames is None else max_frames + 1))
        seekable = any(name in _SEEKABLE for name in container.format.name.split(","))
        time_base = stream.time_base or Fraction(1)
    if max_frames is not None and len(packets) > max_frames:
        raise MediaTooLargeError(f"video has more than {max_frames} frames, over the {max_frames}-frame limit")
    if any(t is None for t, _ in packets):
        return len(packets), None, [], time_base, False
    keyframes = sorted(t for t, key in packets if key) if seekable else []
    decode_order = np.array([t for t, _ in packets], np.int64)
    reordered = bool(len(decode_order) > 1 and (decode_order[1:] < np.maximum.accumulate(decode_order[:-1])).any())
    return len(packets), sorted(decode_order.tolist()), keyframes, time_base, reordered


def _packet_index(data: bytes) -> tuple[int, list[int] | None, list[int]]:
    """``_index`` without the time base."""
    return _index(data)[:3]


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


def _seconds(frame, start: int | None) -> float:
    return float((frame.pts - start) * frame.time_base) if frame.pts is not None and start is not None else 0.0


def _runs(targets: list[int], plan: list[int | None]) -> list[tuple[int | None, set[int]]]:
    """The targets cut where the plan jumps: (keyframe to seek to or None, the targets decoded from there)."""
    runs: list[tuple[int | None, set[int]]] = []
    for target, jump in zip(targets, plan):
        if not runs or jump is not None:
            runs.append((jump, set()))
        runs[-1][1].add(target)
    return runs


def _decoded(packet, context, config: DecodeConfig) -> list:
    """The packet's frames. A frame the decoder refused as over its ``max_pixels`` is too large, not damage: FFmpeg
    fails the packet (MJPEG: EINVAL, H.264: invalid data) with the size it refused in the context, or cleared."""
    import av

    try:
        return packet.decode()
    except av.error.FFmpegError:
        pixels = context.width * context.height
        if 0 < pixels <= config.max_pixels:
            raise
        if pixels:
            check_pixels(context.width, context.height, config)
        raise MediaTooLargeError(f"a frame is over the {config.max_pixels}-pixel limit, or of no valid size (the "
                                 "decoder refused it)") from None


def _sampled_frames(data: bytes, config: DecodeConfig, indices: np.ndarray, pts: list[int] | None,
                    keyframes: list[int] | None = None, work: DecodeWork | None = None,
                    reordered: bool = False) -> tuple[SampledFrames, int]:
    """The sampled ``indices``' RGB frames and times (slot i: ``indices[i]``), and how many frames were decoded.

    With ``pts`` (display-order timestamps) frames are matched by timestamp, frames nothing references
    are skipped unless sampled, and with ``keyframes`` long stretches between samples are jumped over
    (``pipeline/seek.py``); without, every frame up to the last sampled one is decoded and counted. Refused
    before decoding when the frames to go through exceed ``work``'s budget, stopped when it runs out."""
    import av

    work = work or DecodeWork(config)
    keys = [pts[i] for i in indices.tolist()] if pts is not None else indices.tolist()
    wanted = {key: slot for slot, key in enumerate(keys)}
    targets = sorted(wanted)
    plan = seek_plan(targets, pts, keyframes) if pts is not None and keyframes else [None] * len(targets)
    sampled = SampledFrames(len(keys))
    decoded = 0
    # max_pixels: the stream probe inside av.open may run the decoder on the first packets (below: its own)
    with av.open(io.BytesIO(data), options={"max_pixels": str(config.max_pixels)}) as container:
        stream = main_video_stream(container)
        through = frames_decoded(targets, pts, plan) if pts is not None else (targets[-1] + 1 if targets else 0)
        # with timestamps, frames nothing references (B-frames: ``reordered``) are skipped unless sampled
        work.plan(through, stream.codec_context.width, stream.codec_context.height, "video",
                  skippable=pts is not None and reordered)
        # Frame threads keep per-packet skip decisions: FFmpeg copies skip_frame into the worker thread's
        # context as each packet is submitted (tests/pipeline/test_decode.py checks frames against decord's).
        threads = 1 if config.threads is None else config.threads
        stream.thread_type = "SLICE" if threads == 1 else "FRAME"
        stream.thread_count = threads
        context = stream.codec_context
        # A frame may grow past the header's size mid-stream (a 2 MB JPEG packet of 16000x16000 in a 64x64 MJPEG
        # stream: 256 MB decoded, 768 MB as RGB). FFmpeg refuses to allocate one over twice the limit (it counts the
        # padded width, so at the limit itself it would refuse frames within it); check_pixels refuses the rest
        context.options = {"max_pixels": str(2 * config.max_pixels)}
        sar = sample_aspect(stream)
        start = stream.start_time  # times count from the stream's start (an MP4 may start at 10 s, MPEG-TS at 0.08)
        for jump, run in _runs(targets, plan):
            if jump is not None:  # lands on that keyframe, with no frame of before it left in the decoder
                container.seek(jump, stream=stream, backward=True)
                context.flush_buffers()
            for packet in container.demux(stream):
                work.check_deadline()
                if pts is not None:
                    context.skip_frame = "DEFAULT" if not packet.size or packet.pts in wanted else "NONREF"
                for frame in _decoded(packet, context, config):
                    check_pixels(frame.width, frame.height, config)  # before its RGB copy, or fitting it to the first
                    work.spend(frame.width * frame.height)
                    start = frame.pts if start is None else start  # no start time: the first frame's
                    key = frame.pts if pts is not None else decoded
                    if key in wanted:
                        sampled.put(wanted[key], _frame_rgb(frame, sar, config), _seconds(frame, start))
                    decoded += 1
                if all(sampled.filled[wanted[t]] for t in run):
                    break
    return sampled, decoded


def _decode_video_pyav(data: bytes, mime: str, config: DecodeConfig, info: VideoInfo | None = None,
                       work: DecodeWork | None = None) -> DecodedMedia:
    """Decodes up to the last sampled frame and keeps only the sampled ones as RGB, so memory holds
    ``num_frames`` frames, not the whole video. Where samples lie far apart (long videos) it seeks to the
    keyframe before the next one instead of decoding on (``pipeline/seek.py``; same frames).

    Frames that no other frame references (most B-frames: about half of an x264 stream) are skipped unless
    they are sampled, so 32 frames of a 10 s 720p FF++ clip decode in 0.6-1.5 s instead of 1.3-2.0 s
    (docs/benchmarks.md), bit-identical to decoding everything (tests/pipeline/test_decode.py). Streams
    without timestamps, or whose frames do not carry their packets' timestamps, are decoded in full."""
    info = info or probe_video(data, config)
    work = work or DecodeWork(config)
    with media_errors("video"):  # av raises InvalidDataError and friends
        packets, pts, keyframes, time_base, reordered = _index(data, config.max_frames)
        times = np.array(pts or [], np.float64) * float(time_base)
        frame_count = len(pts) if pts else (info.frame_count or packets)
        # the timestamps' span, before any frame decodes: a header may state no duration (a streamed Matroska)
        check_duration(_duration(times, frame_count, info.fps), config)
        indices = sample_times(times, config.num_frames) if pts else sample_indices(frame_count, config.num_frames)
        sampled, decoded = _sampled_frames(data, config, indices, pts or None, keyframes, work, reordered)
        if pts and len(sampled) < len(indices):  # timestamps that do not match up: count frames instead
            sampled = None  # its frames go before the next pass allocates its own
            sampled, decoded = _sampled_frames(data, config, indices, None, work=work)
            pts, times = None, times[:0]
        if len(sampled) < len(indices) and decoded < frame_count:  # fewer frames than promised: sample those there are
            frame_count, indices, sampled = decoded, sample_indices(decoded, config.num_frames), None
            sampled, decoded = _sampled_frames(data, config, indices, None, work=work)
    if not len(sampled):
        raise MediaError("video has no frames")
    if not pts and decoded < frame_count:  # the container promised more frames than the stream holds
        frame_count = decoded
    fps = info.fps
    duration = _duration(times, frame_count, fps)
    frames, slots = sampled.result()
    height, width = frames.shape[1:3]
    check_pixels(width, height, config)
    return DecodedMedia(frames, indices[slots].astype(np.int64), sampled.times[slots], fps, frame_count, duration,
                        width, height, "video", mime)


def decode_bytes(data: bytes, config: DecodeConfig, deadline: Deadline | None = None) -> DecodedMedia:
    """Decode media bytes of any supported type; raises MediaError with a readable reason. ``deadline``: a
    request's (serve), past which decoding stops (DeadlineExceededError)."""
    if len(data) > config.max_bytes:
        raise MediaTooLargeError(f"media is {len(data)} bytes, over the {config.max_bytes}-byte limit")
    kind, mime = sniff_media(data[:512])
    work = DecodeWork(config, deadline)  # the decode budget (pipeline/work.py)
    if kind == "image":
        from pipeline.images import decode_image  # it builds on this module's sampling

        return decode_image(data, mime, config, work)
    info = probe_video(data, config)  # limits from the headers, before any frame buffer exists
    if config.backend == "decord" and mime != "video/mp2t":  # decord cannot read MPEG-TS from memory at all
        try:
            import decord  # noqa: F401
        except ImportError:  # decord has x86_64 wheels only
            return _decode_video_pyav(data, mime, config, info, work)
        return _decode_video_decord(data, mime, config, info, work)
    return _decode_video_pyav(data, mime, config, info, work)


class DecodeStage:
    """Batch stage: ``uri`` (+ optional ``data`` bytes) → sampled ``frames`` and media metadata.

    A row that cannot be decoded keeps going through the graph with its ``error`` text set. ``max_side``
    shrinks the frames to the detector's working size (``pipeline.resize``) when they leave this process
    (the split scan plan); ``width``/``height`` stay the source's. ``literal_uris``: the URIs came from a
    listing (the scan) and name their keys exactly, so they are not normalised as typed ones are.
    """

    def __init__(self, config: DecodeConfig | None = None, storage_options: dict | None = None,
                 max_side: int | None = None, literal_uris: bool = False):
        self.config = config or DecodeConfig()
        self.storage_options = storage_options or {}
        self.max_side = max_side
        self.literal_uris = literal_uris

    def decode_one(self, uri: str, data: bytes | None = None, deadline: Deadline | None = None) -> DecodedMedia:
        if data is None:
            data = read_media_bytes(uri, self.config.max_bytes, self.storage_options, literal=self.literal_uris,
                                    deadline=deadline)
        decoded = decode_bytes(bytes(data), self.config, deadline)
        if self.max_side:
            decoded.frames = shrink(decoded.frames, working_size(decoded.width, decoded.height, self.max_side)[1])
        return decoded

    def __call__(self, batch: Batch, deadline: Deadline | None = None) -> Batch:
        """``deadline``: the request's (serve, one row), past which a decode stops; a scan has none."""
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
                    item = self.decode_one(uris[i], datas[i], deadline)
                except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
                    errors[i], codes[i] = row_failure(exc, DECODE_FAILED, "decode", uris[i], log)
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
