"""Video metadata from the container and stream headers alone, so limits are enforced before any frame
buffer exists: FFmpeg's stream probing normally decodes a few frames, which for a small file declaring
16000x16000 costs gigabytes. Every front end (score, scan, serve) checks here before decoding."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pipeline.config import DecodeConfig
from pipeline.errors import MediaError, MediaTooLargeError, NoVideoStreamError, media_errors


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int  # from the container; 0 when it does not say
    duration: float  # seconds; 0.0 when unknown


def check_pixels(width: int, height: int, config: DecodeConfig) -> None:
    if width <= 0 or height <= 0:
        raise MediaError("media has no picture (zero width or height)")
    if width * height > config.max_pixels:
        raise MediaTooLargeError(f"resolution {width}x{height} is over the {config.max_pixels}-pixel limit")


def check_duration(duration: float, config: DecodeConfig) -> None:
    if duration > config.max_duration_s:
        raise MediaTooLargeError(f"video is {duration:.0f} s long, over the {config.max_duration_s:.0f} s limit")


def check_frames(frames: int, config: DecodeConfig) -> None:
    if config.max_frames is not None and frames > config.max_frames:
        raise MediaTooLargeError(f"video has {frames} frames, over the {config.max_frames}-frame limit")


def _open(data: bytes, max_pixels: int, skip_frames: bool):
    import av

    # skip_frame=all: probing parses headers and packets but decodes nothing; max_pixels makes FFmpeg's
    # decoders refuse an oversized frame should anything decode regardless.
    options = {"max_pixels": str(max_pixels), **({"skip_frame": "all"} if skip_frames else {})}
    return av.open(io.BytesIO(data), options=options)


def _no_video_message(container) -> str:
    kinds = sorted({s.type for s in container.streams if s.type != "video"})
    if not kinds:
        return "file has no streams (no video or audio inside the container)"
    if kinds == ["audio"]:
        return "file has audio but no video stream (audio-only media cannot be scored)"
    return f"file has no video stream (only {', '.join(kinds)})"


def main_video_stream(container):
    """The video stream a player shows: FFmpeg's pick (never a cover picture or a one-frame thumbnail stream,
    which downloaders embed and some containers list first; decord picks the same), else the first."""
    return container.streams.best("video") or container.streams.video[0]


def _read(data: bytes, max_pixels: int, skip_frames: bool) -> VideoInfo:
    with _open(data, max_pixels, skip_frames) as container:
        if not container.streams.video:
            raise NoVideoStreamError(_no_video_message(container))
        stream = main_video_stream(container)
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / 1_000_000
        frame_count = int(stream.frames or 0)
        return VideoInfo(stream.codec_context.width, stream.codec_context.height, fps, frame_count, max(duration, 0.0))


def probe_video(data: bytes, config: DecodeConfig) -> VideoInfo:
    """Read and check a video's size and duration without decoding a frame.

    Raises MediaTooLargeError (limits), NoVideoStreamError (audio-only and other stream-less files) or
    MediaError (unreadable container).
    """
    with media_errors("video"):  # av raises InvalidDataError and friends
        info = _read(data, config.max_pixels, skip_frames=True)
        if info.width <= 0 or info.height <= 0:  # a codec whose size only decoding tells: bounded decode
            info = _read(data, config.max_pixels, skip_frames=False)
    check_pixels(info.width, info.height, config)
    check_duration(info.duration or (info.frame_count / info.fps if info.fps > 0 else 0.0), config)
    check_frames(info.frame_count or round(info.duration * info.fps), config)
    return info
