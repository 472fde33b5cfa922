"""Hostile and odd media (issue 13): limits from headers before any frame buffer, and from the demuxed stream where
the header states none, stream-less files, tiny inputs, rotated, anamorphic, interlaced and multi-stream video, the
PyAV fallback's memory (still images: test_images.py; the decode budget: test_work.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from media_fixtures import (audio_only_mp4, declare_size, encode_image as _encode_image, encode_video, mjpeg_mkv,
                            one_face as _one_face, size_change_ts, sparse_keyframes_mkv)
from pipeline.batch import object_column
from pipeline.config import DecodeConfig, DetectConfig
from pipeline.aspect import stored_shape
from pipeline.decode import DecodeStage, _decode_video_decord, _decode_video_pyav, decode_bytes
from pipeline.detect import DetectStage
from pipeline.errors import MediaError, MediaTooLargeError, NoVideoStreamError
from pipeline.probe import VideoInfo, probe_video

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def huge_mp4() -> bytes:
    """735 KB in the issue; here ~2 KB of H.264 whose SPS, sample entry and track header say 16000x16000."""
    return declare_size(encode_video(), 16000, 16000)


def test_rewritten_header_is_what_ffmpeg_reads(huge_mp4):
    # the fixture is a well-formed file that really declares the size (else the refusals below prove nothing)
    info = probe_video(declare_size(encode_video(), 128, 96), DecodeConfig())
    assert (info.width, info.height, info.frame_count) == (128, 96, 10)
    info = probe_video(huge_mp4, DecodeConfig(max_pixels=16000 * 16000))
    assert (info.width, info.height) == (16000, 16000)


@pytest.mark.parametrize("decode", [
    lambda data: decode_bytes(data, DecodeConfig()),
    lambda data: _decode_video_decord(data, "video/mp4", DecodeConfig()),
    lambda data: _decode_video_pyav(data, "video/mp4", DecodeConfig()),
    lambda data: probe_video(data, DecodeConfig(max_frames=36_000)),  # the server's limits, from the header
], ids=["decode_bytes", "decord", "pyav", "serve_header_check"])
def test_huge_declared_video_is_refused_by_every_path(huge_mp4, decode):
    with pytest.raises(MediaTooLargeError, match="16000x16000") as caught:
        decode(huge_mp4)
    assert caught.value.code == "media_too_large"


def test_huge_declared_video_is_refused_without_allocating_a_frame():
    # A fresh process, so its peak RSS measures this refusal alone (VmHWM: getrusage's ru_maxrss keeps the parent's
    # peak across fork and exec, so under pytest it measured nothing). Before the fix FFmpeg's probe decoded the
    # first frames (~670 MB) and decord's first frame cost 3.6 GB.
    script = """
import json, sys
sys.path.insert(0, "tests")
from media_fixtures import declare_size, encode_video
from pipeline.config import DecodeConfig
from pipeline.decode import decode_bytes
from pipeline.errors import MediaTooLargeError
from pipeline.probe import VideoInfo, probe_video
data = declare_size(encode_video(), 16000, 16000)
try:
    decode_bytes(data[:10], DecodeConfig())  # loads the decoders' libraries before the baseline
except Exception:
    pass
def peak_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
before = peak_kib()
refused = 0
for check in (lambda: decode_bytes(data, DecodeConfig()), lambda: probe_video(data, DecodeConfig(max_frames=36000))):
    try:
        check()
    except MediaTooLargeError:
        refused += 1
print(json.dumps({"refused": refused, "peak_mib": (peak_kib() - before) / 1024}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["refused"] == 2
    assert result["peak_mib"] < 64, result


@pytest.mark.parametrize("make, message", [
    (lambda: mjpeg_mkv([(128, 64), (128, 96), (128, 96)]), "resolution 128x96 is over the 8192-pixel limit"),
    (lambda: mjpeg_mkv([(128, 64), (512, 512), (512, 512)]), "over the 8192-pixel limit, or of no valid size"),
    (lambda: size_change_ts([(128, 64), (128, 96)]), "resolution 128x96 is over the 8192-pixel limit"),
    (lambda: size_change_ts([(128, 64), (512, 512)]), "resolution 512x512 is over the 8192-pixel limit"),
], ids=["mjpeg under twice the limit", "mjpeg far over", "h264 under twice the limit", "h264 far over"])
def test_a_frame_that_grows_past_the_limit_mid_stream_is_refused(make, message):
    """The header states the first frame's size; later frames were fitted to it, so the pixel limit was never
    checked on them: the review's 6 MB MJPEG of 64x64 then 16000x16000 frames was scored at 1.3 GB. Frames over
    twice the limit the decoder refuses before allocating them (MJPEG says EINVAL, H.264 invalid data: both are
    too large, not corrupt); the rest are refused before their RGB copy."""
    data = make()
    with pytest.raises(MediaTooLargeError, match=message) as caught:
        decode_bytes(data, DecodeConfig(max_pixels=128 * 64))
    assert caught.value.code == "media_too_large"
    assert decode_bytes(data, DecodeConfig(max_pixels=512 * 512)).frames.shape[1:3] == (64, 128)  # fitted to the first


def test_a_frame_grown_mid_stream_is_refused_without_allocating_it(tmp_path):
    """In a fresh process (as above), the file made here: making it peaks higher than decoding it. Before the fix the
    8000x8000 frame was decoded (61 MiB), made RGB (183 MiB) and fitted to 64x64: a 246 MiB peak; refused only as
    it came out of the decoder, 62 MiB; now the decoder refuses it before allocating it."""
    grown = tmp_path / "grown.mkv"
    grown.write_bytes(mjpeg_mkv([(64, 64), (8000, 8000)]))  # 64 MP: over twice the 16.8 MP default
    script = """
import json, sys
sys.path.insert(0, "tests")
from media_fixtures import mjpeg_mkv
from pipeline.config import DecodeConfig
from pipeline.decode import decode_bytes
from pipeline.errors import MediaTooLargeError
decode_bytes(mjpeg_mkv([(64, 64), (64, 64)]), DecodeConfig())  # loads the decoders' libraries before the baseline
data = open(sys.argv[1], "rb").read()
def peak_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
before = peak_kib()
try:
    decode_bytes(data, DecodeConfig())
    refused = False
except MediaTooLargeError:
    refused = True
print(json.dumps({"refused": refused, "peak_mib": (peak_kib() - before) / 1024}))
"""
    out = subprocess.run([sys.executable, "-c", script, str(grown)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["refused"] and result["peak_mib"] < 32, result


def test_a_stream_whose_header_states_no_length_is_held_to_the_limits():
    """A live-streamed Matroska states neither duration nor frame count, so the header checks pass anything: the
    review's 100,000 frames (3,333 s) were scored. The demuxed stream's frames and timestamps are checked instead,
    before a frame is decoded."""
    data = sparse_keyframes_mkv(64, 48, 300, fps=30, keyint=30, streamed=True)  # 10 s
    info = probe_video(data, DecodeConfig())
    assert (info.frame_count, info.duration) == (0, 0.0)  # the header says nothing
    assert decode_bytes(data, DecodeConfig()).frame_count == 300
    with pytest.raises(MediaTooLargeError, match="10 s long, over the 5 s limit"):
        decode_bytes(data, DecodeConfig(max_duration_s=5))
    with pytest.raises(MediaTooLargeError, match="more than 200 frames, over the 200-frame limit"):
        decode_bytes(data, DecodeConfig(max_frames=200))


def test_decord_counts_frames_the_header_does_not_state():
    """decord cannot read a streamed Matroska at all (media_corrupt); given a header that states no length, its own
    frame count is held to the limit."""
    pytest.importorskip("decord")
    data = sparse_keyframes_mkv(64, 48, 300, fps=30, keyint=30)
    silent = VideoInfo(64, 48, 30.0, 0, 0.0)
    assert _decode_video_decord(data, "video/x-matroska", DecodeConfig(), silent).frame_count == 300
    with pytest.raises(MediaTooLargeError, match="video has 300 frames, over the 200-frame limit"):
        _decode_video_decord(data, "video/x-matroska", DecodeConfig(max_frames=200), silent)


@pytest.mark.parametrize("codec", ["aac", "mp2"])
def test_audio_only_mp4_says_so(codec):
    data = audio_only_mp4(codec=codec)
    for decode in (lambda: decode_bytes(data, DecodeConfig()), lambda: _decode_video_pyav(data, "video/mp4", DecodeConfig()),
                   lambda: probe_video(data, DecodeConfig(max_frames=36_000))):
        with pytest.raises(NoVideoStreamError, match="audio but no video stream") as caught:
            decode()
        assert caught.value.code == "no_video_stream"
    out = DecodeStage()({"uri": object_column(["song.mp4"]), "data": object_column([data])})
    assert out["error"][0] == "file has audio but no video stream (audio-only media cannot be scored)"


def test_pyav_fallback_keeps_only_sampled_frames(samples_dir):
    data = (samples_dir / "astronaut_zoom.mp4").read_bytes()  # 100 frames of 480x360: 52 MB as RGB
    tracemalloc.start()
    try:
        media = _decode_video_pyav(data, "video/mp4", DecodeConfig(num_frames=4))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert media.frames.shape == (4, 360, 480, 3) and media.frame_indices.tolist() == [0, 33, 66, 99]
    assert media.frame_count == 100
    assert peak < 8 * 1024**2, f"peak {peak / 1024**2:.1f} MiB: frames beyond the sampled ones were kept"


def test_pyav_fallback_counts_frames_when_the_container_does_not(tmp_path):
    data = encode_video(frames=12, format="matroska")  # Matroska stores no frame count
    media = _decode_video_pyav(data, "video/x-matroska", DecodeConfig(num_frames=4))
    assert media.frame_count == 12 and media.frame_indices.tolist() == [0, 4, 7, 11]
    # frames were taken where sampled: the clip brightens by 23 per frame
    assert np.abs(media.frames.mean(axis=(1, 2, 3)) - np.array([0, 4, 7, 11]) * 23).max() < 6


@pytest.mark.parametrize("size, format", [(1, "PNG"), (8, "JPEG"), (32, "PNG"), (32, "video")])
def test_tiny_inputs_have_no_face_and_no_error(size, format):
    if format == "video":
        data = encode_video(size, size)
    else:
        data = _encode_image(Image.new("RGB", (size, size), (200, 150, 120)), format)
    batch = DecodeStage(DecodeConfig(num_frames=4))({"uri": object_column(["tiny"]), "data": object_column([data])})
    assert batch["error"][0] == "" and batch["frames"][0].shape[1:3] == (size, size)
    out = DetectStage(DetectConfig(), device="cpu", crop_size=64)(batch)
    assert out["error"][0] == "" and out["crops"][0].shape == (0, 64, 64, 3)


def test_tiny_frames_never_reach_mtcnn(detector):
    for shape in [(1, 1), (8, 8), (11, 11), (32, 32), (39, 39), (1, 900), (900, 2)]:
        results = detector.detect(np.full((3, *shape, 3), 128, np.uint8))
        assert len(results) == 3 and all(len(boxes) == 0 for boxes, _, _ in results)


def test_tiny_image_scores_no_face(detector_env):
    from pipeline.config import Settings
    from pipeline.graph import ScoringPipeline

    pipeline = ScoringPipeline(Settings(device="cpu", classify={"checkpoint": detector_env}))
    for data in (_encode_image(Image.new("RGB", (1, 1)), "PNG"), encode_video(32, 32)):
        result = pipeline.score("tiny", data)
        assert result.label == "NO_FACE" and result.error is None and result.score is None


# ---- unusual images: each mode has a defined, tested outcome -------------------------------------------




def _write_still(container, stream, picture: np.ndarray, frames: int) -> None:
    """``picture`` encoded ``frames`` times into ``stream``, the encoder flushed."""
    import av

    for _ in range(frames):
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


@pytest.mark.parametrize("degrees", [90, 180, -90])
def test_video_display_rotation_is_applied(astronaut, detector, degrees):
    """Phones store portrait video sideways and tag the stream with a display rotation; decord applied it,
    the default PyAV decoder had not, so the face was sideways and MTCNN missed it."""
    import av

    upright = np.asarray(astronaut)
    stored = np.ascontiguousarray(np.rot90(upright, -(degrees // 90)))  # what the tag turns back
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "12"})
        stream.height, stream.width, stream.pix_fmt = *stored.shape[:2], "yuv444p"
        stream.set_display_rotation(degrees)
        _write_still(container, stream, stored, 4)
    media = decode_bytes(buf.getvalue(), DecodeConfig(num_frames=2))
    assert np.abs(media.frames[0].astype(int) - upright).mean() < 4
    _one_face(detector, media.frames[0])
    decord_media = _decode_video_decord(buf.getvalue(), "video/mp4", DecodeConfig(num_frames=2))
    assert np.array_equal(media.frames, decord_media.frames)  # both backends show what a player shows


def _anamorphic(stored: np.ndarray, sar: Fraction, degrees: int = 0, frames: int = 4, format: str = "mp4") -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=format) as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "12"})
        stream.height, stream.width, stream.pix_fmt = *stored.shape[:2], "yuv444p"
        stream.codec_context.sample_aspect_ratio = sar
        if degrees:
            stream.set_display_rotation(degrees)
        _write_still(container, stream, stored, frames)
    return buf.getvalue()


@pytest.mark.parametrize("sar, degrees, format", [(Fraction(4, 3), 0, "mp4"), (Fraction(2, 3), 0, "mp4"),
                                                  (Fraction(4, 3), 90, "mp4"), (Fraction(4, 3), 0, "matroska"),
                                                  (Fraction(4, 3), 0, "mpegts")])
def test_anamorphic_video_is_shown_with_square_pixels(astronaut, detector, sar, degrees, format):
    """DVD and broadcast SD store widescreen frames squeezed and say so by the sample aspect ratio; a player
    stretches them. Scored as stored, the face was squeezed to 3/4 of its width (or stretched 1.5x)."""
    upright = np.asarray(astronaut)
    turned = np.ascontiguousarray(np.rot90(upright, -(degrees // 90)))  # as the camera stored it, square pixels
    height, width = turned.shape[:2]
    stored = cv2.resize(turned, (round(width / sar), height), interpolation=cv2.INTER_AREA)
    data = _anamorphic(stored, sar, degrees, format=format)  # Matroska, MPEG-TS: the ratio only in the stream's SPS
    assert stored_shape(data) == (sar, degrees % 180 != 0)
    media = decode_bytes(data, DecodeConfig(num_frames=2))
    assert (media.width, media.height) == (upright.shape[1], upright.shape[0])
    assert np.abs(media.frames[0].astype(int) - upright).mean() < 6
    _one_face(detector, media.frames[0])
    decord_media = decode_bytes(data, DecodeConfig(num_frames=2, backend="decord"))
    assert np.array_equal(media.frames, decord_media.frames)  # both backends show what a player shows


def test_mpeg_ts_decodes_with_either_backend_setting(astronaut):
    """decord cannot read MPEG-TS from memory (every frame 'corrupt', whatever the length): with the decord
    backend chosen, a broadcast recording would fail the scan; PyAV reads it instead."""
    stored = np.asarray(astronaut.resize((160, 128)))
    data = _anamorphic(stored, Fraction(1), frames=25, format="mpegts")
    with pytest.raises(MediaError):
        _decode_video_decord(data, "video/mp2t", DecodeConfig(num_frames=2))
    media = decode_bytes(data, DecodeConfig(num_frames=2, backend="decord"))
    assert media.mime == "video/mp2t" and media.frames.shape == (2, 128, 160, 3)
    assert np.abs(media.frames[0].astype(int) - stored).mean() < 6


def test_absurd_pixel_aspect_is_refused_before_allocating(astronaut):
    """A ratio of 64:1 (the largest x264 writes) stretches a 64 px frame to 4096 px wide: over the pixel limit,
    it is refused as too large (per frame, before the stretched frame exists), not allocated."""
    stored = np.asarray(astronaut.resize((64, 64)))
    data = _anamorphic(stored, Fraction(64, 1), frames=2)
    for decode in (decode_bytes, lambda d, c: _decode_video_decord(d, "video/mp4", c)):
        with pytest.raises(MediaTooLargeError):
            decode(data, DecodeConfig(num_frames=2, max_pixels=100_000))


def test_interlaced_video_is_deinterlaced_to_one_field(astronaut, detector):
    """Two fields shot apart in time comb a moving face; the detector reads combing as a seam (a woven FF++
    real went from 0.49 to 0.59, FAKE). Decoded, an interlaced frame is its top field, lines interpolated."""
    import av

    photo = np.asarray(astronaut)
    early, late = photo, np.roll(photo, 12, axis=1)  # the face moved 12 px between the two fields
    woven = early.copy()
    woven[1::2] = late[1::2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "12", "x264-params": "interlaced=1:tff=1"})
        stream.height, stream.width, stream.pix_fmt = *woven.shape[:2], "yuv444p"
        _write_still(container, stream, woven, 4)
    frame = decode_bytes(buf.getvalue(), DecodeConfig(num_frames=2)).frames[0].astype(int)
    assert np.abs(frame - early).mean() < 6 < np.abs(woven.astype(int) - early).mean()  # the early field, no comb
    assert np.abs(frame[1::2][:-1] - (frame[0::2][:-1] + frame[0::2][1:]) / 2).max() <= 1  # lines between: averages
    _one_face(detector, frame.astype(np.uint8))
    # progressive frames are left as they are (the decoders agree on every bundled clip: tests/pipeline/test_decode.py)


def test_a_cover_picture_listed_first_is_not_the_video(astronaut, detector):
    """Downloaders embed a thumbnail as a one-frame video stream, and Matroska lists it first: decoding it gave
    NO_FACE for a clip full of faces. The stream scored is the one a player shows (and decord picks)."""
    import av

    photo = np.asarray(astronaut)
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as container:
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 320, 240, "yuvj420p"
        clip = container.add_stream("libx264", rate=25)
        clip.width, clip.height, clip.pix_fmt = 512, 512, "yuv420p"
        _write_still(container, cover, np.full((240, 320, 3), 90, np.uint8), 1)
        _write_still(container, clip, photo, 20)
    data = buf.getvalue()
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"  # the trap is really there
    media = decode_bytes(data, DecodeConfig(num_frames=4))
    assert (media.width, media.height, media.frame_count, len(media.frames)) == (512, 512, 20, 4)
    _one_face(detector, media.frames[0])
    assert probe_video(data, DecodeConfig()).width == 512
    assert np.array_equal(media.frames, _decode_video_decord(data, "video/x-matroska", DecodeConfig(num_frames=4)).frames)
