"""The decode budget and deadline (pipeline/work.py): media whose samples need far more decoding than their size
says (sparse keyframes, an APNG of tiny frames on a big canvas) is refused before decoding, normal video passes,
and a decode stops at its request's deadline."""

from __future__ import annotations

import time

import pytest

from media_fixtures import canvas_apng, sparse_keyframes_mkv
from pipeline.config import DecodeConfig
from pipeline.decode import decode_bytes, sample_indices
from pipeline.errors import DeadlineExceededError, MediaTooLargeError
from pipeline.seek import frames_decoded, seek_plan
from pipeline.work import Deadline, budget_pixels

QVGA = 320 * 240
SERVER = DecodeConfig(max_pixels=3840 * 2160, max_frames=36_000, max_duration_s=600,  # serve's limits
                      max_decoded_pixels=32 * 75 * 3840 * 2160)
SMALL = DecodeConfig(max_pixels=QVGA, max_decoded_pixels=2400 * QVGA)


def _through(frames: int, keyint: int, samples: int = 32) -> int:
    """Frames the PyAV decoder goes through for ``samples`` of a constant-rate stream, a keyframe every ``keyint``."""
    pts = list(range(frames))
    targets = sample_indices(frames, samples).tolist()
    return frames_decoded(targets, pts, seek_plan(targets, pts, pts[::keyint]))


def test_normal_long_video_is_within_the_budget_and_the_review_s_bombs_are_not():
    budget = budget_pixels(SERVER)
    assert _through(18_000, 300) * 1920 * 1080 < budget  # 10 min of 1080p at 30 fps, a keyframe every 10 s
    assert _through(18_000, 250) * 3840 * 2160 > budget  # the same at 4K: over a minute of decoding
    assert 3000 * 3840 * 2160 > budget  # the review's 125 KB Matroska: 3,000 4K frames, one keyframe
    assert 10_000 * 3840 * 2160 > budget  # its 702 KB APNG: 10,000 1x1 frames composited on a 4K canvas
    assert budget_pixels(DecodeConfig()) == float("inf")  # a scan's default: its size and duration limits bound it


def test_the_server_applies_its_budget_and_a_scan_none():
    from pipeline.config import load_settings
    from serve.guard import server_decode_config

    settings = load_settings()
    assert settings.decode.max_decoded_pixels is None
    assert server_decode_config(settings).max_decoded_pixels == settings.serve.max_decoded_pixels == SERVER.max_decoded_pixels
    tighter = load_settings(**{"decode.max_decoded_pixels": 10**9})
    assert server_decode_config(tighter).max_decoded_pixels == 10**9  # the stricter of the two
    # a one-hour broadcast in MPEG-TS (no index: every frame to the last sample) is scanned, not refused
    assert 3600 * 25 * 1920 * 1080 < budget_pixels(settings.decode)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_sparse_keyframes_are_refused_before_decoding(backend):
    """3,000 frames of one keyframe: every sample needs all the frames before it decoded. The budget at these
    limit here is 2,400 frames of 320x240 (no B-frames: the plan is what will decode), so a normal stream of the
    same frames (a keyframe every 50: 863 frames to go through) passes."""
    if backend == "decord":
        pytest.importorskip("decord")
    config = SMALL.model_copy(update={"backend": backend})
    start = time.perf_counter()
    with pytest.raises(MediaTooLargeError, match="needs 3000 frames of 320x240 decoded") as caught:
        decode_bytes(sparse_keyframes_mkv(320, 240, 3000), config)
    assert caught.value.code == "media_too_large" and time.perf_counter() - start < 2  # not decoded first
    media = decode_bytes(sparse_keyframes_mkv(320, 240, 3000, keyint=50), config)
    assert media.frames.shape == (32, 240, 320, 3) and media.frame_count == 3000


def test_an_apng_of_tiny_frames_on_a_big_canvas_is_refused_before_compositing():
    config = SMALL
    with pytest.raises(MediaTooLargeError, match="animation needs 3000 frames of 320x240"):
        decode_bytes(canvas_apng(320, 240, 3000), config)
    assert decode_bytes(canvas_apng(320, 240, 300), config).frame_count == 300


@pytest.mark.parametrize("make", [lambda: sparse_keyframes_mkv(320, 240, 300, keyint=50),
                                  lambda: canvas_apng(320, 240, 300)], ids=["video", "animation"])
def test_a_passed_deadline_stops_decoding_at_the_next_frame(make):
    data = make()
    with pytest.raises(DeadlineExceededError, match="decoding stopped: the request's deadline passed") as caught:
        decode_bytes(data, DecodeConfig(), Deadline(0))
    assert caught.value.code == "deadline_exceeded"
    deadline = Deadline(60)
    assert decode_bytes(data, DecodeConfig(), deadline).frames.shape[0] == 32
    deadline.stop()  # the caller went away: said so in the log, not "the deadline passed"
    with pytest.raises(DeadlineExceededError, match="decoding stopped: the request was cancelled"):
        decode_bytes(data, DecodeConfig(), deadline)


def test_a_cancellation_at_the_deadline_is_the_deadline():
    """The ingress cancels its calls at the request's deadline (its 504): that stop() is the deadline, not a
    client that went away; and a second stop() keeps what the first said."""
    at_deadline = Deadline(0.1)
    at_deadline.stop()
    early = Deadline(60)
    early.stop()
    early.stop()
    assert (at_deadline.why(), early.why()) == ("the request's deadline passed", "the request was cancelled")
    assert at_deadline.passed() and early.passed()


def test_a_long_decode_ends_at_its_deadline():
    """Within the budget but seconds of decoding (3,000 frames of 720p after one keyframe): it stops mid-way."""
    data = sparse_keyframes_mkv(1280, 720, 3000)
    start = time.perf_counter()
    with pytest.raises(DeadlineExceededError):
        decode_bytes(data, SERVER, Deadline(0.3))
    assert time.perf_counter() - start < 1.5  # 1.8 s to the end on one core of the 2-core CI box


def test_frames_the_decoder_skips_do_not_count_against_the_budget():
    """x264's B-frames are skipped unless sampled: the plan counts them, the budget counts what is decoded. A clip
    whose plan is 600 frames but that decodes about 340 passes a 400-frame budget; a 150-frame one stops it."""
    import io

    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30, options={"g": "250", "bf": "3", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        base = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
        for i in range(600):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.roll(base, 2 * i, axis=1), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data, frame = buffer.getvalue(), 160 * 120
    assert decode_bytes(data, DecodeConfig(max_decoded_pixels=400 * frame)).frame_count == 600
    with pytest.raises(MediaTooLargeError, match="decode limit of 2,880,000 pixels"):
        decode_bytes(data, DecodeConfig(max_decoded_pixels=150 * frame))
