"""Decode stage on media that is not one constant-rate run from time zero: a late start, a variable frame rate,
an MP4 trimmed without re-encoding, a size change mid-stream, animated images."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from PIL import features

from media_fixtures import animated_image, encode_video, size_change_ts, trimmed_copy, variable_rate_mp4
from pipeline.config import DecodeConfig
from pipeline.decode import _packet_index, decode_bytes, sample_indices, sample_times
from pipeline.errors import MediaTooLargeError


def _brightness(frames: np.ndarray) -> np.ndarray:
    return frames.mean(axis=(1, 2, 3))


def _assert_backends_agree(data: bytes, frames: int) -> None:
    pytest.importorskip("decord")
    a = decode_bytes(data, DecodeConfig(num_frames=frames, backend="decord"))
    b = decode_bytes(data, DecodeConfig(num_frames=frames))
    assert a.frame_indices.tolist() == b.frame_indices.tolist()
    assert np.array_equal(a.frames, b.frames)
    assert (a.frame_count, a.duration) == pytest.approx((b.frame_count, b.duration), abs=1e-3)
    np.testing.assert_allclose(a.timestamps, b.timestamps, atol=1e-3)


# ---- a stream that changes size ----------------------------------------------------------------------------


def test_a_stream_that_changes_size_is_rescaled_to_the_first_frames_size():
    data = size_change_ts([(96, 64), (64, 48), (128, 96)])
    media = decode_bytes(data, DecodeConfig(num_frames=9))
    assert media.frames.shape == (9, 64, 96, 3) and (media.width, media.height) == (96, 64)
    # a plain resize: every part's left half stays white and its right half black, wherever it was sampled
    assert _brightness(media.frames[:, :, :40]).min() > 230 and _brightness(media.frames[:, :, 56:]).max() < 25


# ---- timestamps from the stream's start ------------------------------------------------------------------


@pytest.mark.parametrize("format, start", [("mp4", 250), ("matroska", 250), ("mpegts", 0)])
def test_timestamps_count_from_the_streams_start(format, start):
    """An MP4 cut from a recording keeps its 10 s offset; MPEG-TS muxers start the clock at 0.08 s."""
    media = decode_bytes(encode_video(64, 48, frames=20, format=format, start=start), DecodeConfig(num_frames=5))
    np.testing.assert_allclose(media.timestamps, media.frame_indices / 25, atol=1e-3)
    assert media.duration == pytest.approx(20 / 25)


def test_backends_agree_on_a_late_start():
    _assert_backends_agree(encode_video(64, 48, frames=20, start=250), 5)


# ---- variable frame rate ----------------------------------------------------------------------------------

GAPS = [1000] * 10 + [33] * 29  # 40 frames: 10 s at 1 fps, then 1 s at 30 fps


@pytest.mark.parametrize("count", [1, 2, 5, 12, 100, 1500])
@pytest.mark.parametrize("num_frames", [1, 3, 5, 8, 32])
def test_constant_rate_samples_the_frames_it_always_did(count, num_frames):
    exact = np.arange(count) * 512
    jittery = np.round(np.arange(count) * 1000 / 30)  # a millisecond clock at 30 fps: 33, 33, 34 ms apart
    for times in (exact, jittery):
        assert sample_times(times, num_frames).tolist() == sample_indices(count, num_frames).tolist()


def test_a_stream_of_no_more_frames_than_asked_gives_them_all_whatever_their_times():
    assert sample_times(np.array([0, 0.1, 0.2, 3, 3.1]), 32).tolist() == [0, 1, 2, 3, 4]


def test_variable_rate_samples_the_frames_nearest_to_even_times():
    times = np.cumsum([0, *GAPS]) / 1000
    assert sample_times(times, 8).tolist() == [0, 2, 3, 5, 6, 8, 9, 39]
    assert sample_times(times, 32).tolist() == list(range(11)) + [18, 28, 39]  # a held frame is sampled once


def test_variable_rate_video_is_sampled_evenly_in_time():
    media = decode_bytes(variable_rate_mp4(GAPS), DecodeConfig(num_frames=8))
    end = sum(GAPS) / 1000
    assert media.frame_count == 40 and media.duration == pytest.approx(end + 0.033, abs=1e-3)
    assert np.abs(media.timestamps - np.linspace(0, end, 8)).max() <= 0.5  # the nearest frame, at most 1 s apart
    assert np.abs(_brightness(media.frames) - (media.frame_indices * 23) % 256).max() < 6  # and it is that frame


def test_backends_agree_on_variable_rate_video():
    _assert_backends_agree(variable_rate_mp4(GAPS), 8)


# ---- an MP4 trimmed without re-encoding --------------------------------------------------------------------


def test_mp4_trimmed_without_reencoding_skips_the_cut_lead_in():
    data = trimmed_copy(encode_video(64, 48, frames=40), 12)
    packets, pts, _ = _packet_index(data)
    assert packets == 28 and pts[0] == 0  # frames matched by timestamp, no fall back to counting
    media = decode_bytes(data, DecodeConfig(num_frames=8))
    assert media.frame_count == 28 and media.frame_indices.tolist() == sample_indices(28, 8).tolist()
    np.testing.assert_allclose(media.timestamps, media.frame_indices / 25, atol=1e-3)
    assert media.duration == pytest.approx(28 / 25)
    assert np.abs(_brightness(media.frames) - (media.frame_indices + 12) * 23 % 256).max() < 6  # after the cut


def test_decord_backend_reads_a_trimmed_mp4_as_pyav_does():
    """decord counts the cut lead-in as frames, and its frame numbers drift by the cut: PyAV reads these."""
    data = trimmed_copy(encode_video(64, 48, frames=40), 12)
    _assert_backends_agree(data, 8)
    assert decode_bytes(data, DecodeConfig(num_frames=8, backend="decord")).timestamps[0] == 0


def test_frames_are_resampled_when_the_stream_holds_fewer_than_promised(monkeypatch):
    import pipeline.decode as decode

    data = encode_video(frames=12, format="matroska")
    # no timestamps to match by, and a container that promises 20 frames: counted as they decode
    monkeypatch.setattr(decode, "_index", lambda data, max_frames=None: (20, None, [], Fraction(1, 1000), False))
    media = decode._decode_video_pyav(data, "video/x-matroska", DecodeConfig(num_frames=4))
    assert media.frame_count == 12 and media.frame_indices.tolist() == [0, 4, 7, 11]
    assert np.abs(_brightness(media.frames) - np.array([0, 4, 7, 11]) * 23).max() < 6


# ---- animated images ---------------------------------------------------------------------------------------

FORMATS = ["WEBP", "PNG", pytest.param("AVIF", marks=pytest.mark.skipif(not features.check("avif"), reason="no AVIF"))]


@pytest.mark.parametrize("format", FORMATS)
def test_animated_image_is_sampled_over_its_frames(format):
    media = decode_bytes(animated_image(format, [100] * 12), DecodeConfig(num_frames=4))
    assert (media.kind, media.mime) == ("image", f"image/{format.lower()}")
    assert media.frame_count == 12 and media.frame_indices.tolist() == [0, 4, 7, 11]
    np.testing.assert_allclose(media.timestamps, [0, 0.4, 0.7, 1.1], atol=1e-6)
    assert media.duration == pytest.approx(1.2) and media.fps == pytest.approx(10)
    assert np.abs(_brightness(media.frames) - media.frame_indices * 23).max() < 4


@pytest.mark.parametrize("format", FORMATS)
def test_animation_with_uneven_durations_is_sampled_evenly_in_time(format):
    media = decode_bytes(animated_image(format, [1000] * 4 + [50] * 8), DecodeConfig(num_frames=5))
    assert media.frame_indices.tolist() == [0, 1, 2, 3, 11]
    np.testing.assert_allclose(media.timestamps, [0, 1, 2, 3, 4.35], atol=1e-6)
    assert np.abs(_brightness(media.frames) - media.frame_indices * 23).max() < 4


def test_animation_over_the_frame_limit_is_refused():
    with pytest.raises(MediaTooLargeError, match="12 frames"):
        decode_bytes(animated_image("WEBP", [100] * 12), DecodeConfig(max_frames=10))


@pytest.mark.parametrize("format,codec", [("avi", "mpeg4"), ("mpeg", "mpeg2video")])
def test_decord_backend_reads_streams_without_timestamps_as_pyav_does(format, codec):
    """AVI and MPEG-PS frames carry no timestamp for decord, which then numbers them out of display order."""
    _assert_backends_agree(encode_video(frames=24, codec=codec, format=format), 8)


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_decord_backend_reads_a_matroska_of_a_few_frames_as_pyav_does(frames):
    """decord's index times the frames of a 1-3 frame Matroska at 9.2e15 s (its "no time"), which read as a
    duration of 0.0: times that no allowed video can have send it to PyAV."""
    data = encode_video(frames=frames, format="matroska")
    _assert_backends_agree(data, 8)
    assert decode_bytes(data, DecodeConfig(backend="decord")).timestamps.max() < 1


@pytest.mark.parametrize("raised,code", [(MemoryError(), "out_of_memory"), ("ffmpeg", "media_corrupt")],
                         ids=["the process ran out", "a corrupt header asked for the impossible"])
def test_out_of_memory_is_the_servers_fault_but_ffmpegs_enomem_is_the_files(monkeypatch, raised, code):
    """A MemoryError of this process is worth a retry (out_of_memory); PyAV's own MemoryError (FFmpeg's ENOMEM,
    e.g. an MP4 whose stts table claims 2^28 entries) is the file's fault: media_corrupt, never a retry loop."""
    import av

    from pipeline.batch import object_column
    from pipeline.decode import DecodeStage

    def no_memory(*args, **kwargs):
        raise av.error.MemoryError(12, "Cannot allocate memory") if raised == "ffmpeg" else raised

    data = encode_video()
    monkeypatch.setattr(av, "open", no_memory)
    out = DecodeStage(DecodeConfig())({"uri": object_column(["clip.mp4"]), "data": object_column([data])})
    assert out["error_code"].tolist() == [code]


def test_torch_running_out_while_detecting_faces_is_out_of_memory(monkeypatch):
    import torch

    from pipeline.batch import object_column
    from pipeline.config import DetectConfig
    from pipeline.decode import DecodeStage
    from pipeline.detect import DetectStage

    decoded = DecodeStage(DecodeConfig(num_frames=2))({"uri": object_column(["clip.mp4"]),
                                                        "data": object_column([encode_video()])})
    stage = DetectStage(DetectConfig(), "cpu", crop_size=64)

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(stage, "faces_of", no_memory)
    assert stage(decoded)["error_code"].tolist() == ["out_of_memory"]
