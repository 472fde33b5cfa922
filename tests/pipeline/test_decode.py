"""Decode stage: sampling, timestamps, images as one frame, typed errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.batch import object_column
from pipeline.config import DecodeConfig
from pipeline.decode import DecodeStage, _decode_video_pyav, decode_bytes, sample_indices
from pipeline.errors import MediaError, MediaTooLargeError, UnsupportedMediaError
from pipeline.media import sniff_media


def test_sample_indices_cover_the_whole_video():
    idx = sample_indices(100, 32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 99
    assert np.all(np.diff(idx) > 0)
    assert sample_indices(5, 32).tolist() == [0, 1, 2, 3, 4]
    assert len(sample_indices(0, 32)) == 0


def test_video_frames_and_timestamps(samples_dir):
    data = (samples_dir / "astronaut_zoom.mp4").read_bytes()
    media = decode_bytes(data, DecodeConfig(num_frames=8))
    assert media.kind == "video" and media.frames.shape == (8, 360, 480, 3) and media.frames.dtype == np.uint8
    assert media.frame_count == 100 and media.fps == pytest.approx(25.0)
    assert media.duration == pytest.approx(4.0, abs=0.05)
    # timestamps are evenly spread from the first to the last frame
    assert media.timestamps[0] == pytest.approx(0.0, abs=0.05)
    assert media.timestamps[-1] == pytest.approx(99 / 25, abs=0.05)
    assert np.all(np.diff(media.timestamps) > 0)
    # frames differ (the clip moves), so sampling really took different frames
    assert np.abs(media.frames[0].astype(int) - media.frames[-1].astype(int)).mean() > 5


def test_pyav_fallback_agrees_with_decord(samples_dir):
    data = (samples_dir / "astronaut_zoom.mp4").read_bytes()
    a = decode_bytes(data, DecodeConfig(num_frames=5))
    b = _decode_video_pyav(data, "video/mp4", DecodeConfig(num_frames=5))
    assert a.frame_indices.tolist() == b.frame_indices.tolist()
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 3


def test_image_is_a_video_of_one_frame(samples_dir):
    media = decode_bytes((samples_dir / "astronaut.jpg").read_bytes(), DecodeConfig())
    assert media.kind == "image" and media.frames.shape == (1, 512, 512, 3) and media.frame_count == 1


@pytest.mark.parametrize("payload, error", [
    (b"", MediaError),
    (b"hello, this is text and not a video at all" * 10, UnsupportedMediaError),
    (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 400, MediaError),          # mp4 header, no movie inside
    (b"\xff\xd8\xff\xe0" + b"\x13" * 300, MediaError),                 # JPEG signature, corrupt body
])
def test_bad_bytes_raise_typed_errors(payload, error):
    with pytest.raises(error):
        decode_bytes(payload, DecodeConfig())


def test_truncated_video_raises_media_error(samples_dir):
    data = (samples_dir / "astronaut_zoom.mp4").read_bytes()
    with pytest.raises(MediaError):
        decode_bytes(data[: len(data) // 3], DecodeConfig())


def test_limits(samples_dir):
    data = (samples_dir / "astronaut.jpg").read_bytes()
    with pytest.raises(MediaTooLargeError):
        decode_bytes(data, DecodeConfig(max_pixels=100 * 100))
    with pytest.raises(MediaTooLargeError):
        decode_bytes((samples_dir / "astronaut_zoom.mp4").read_bytes(), DecodeConfig(max_duration_s=1.0))
    with pytest.raises(MediaTooLargeError):
        decode_bytes(data, DecodeConfig(max_bytes=1000))


def test_sniffing_ignores_names():
    assert sniff_media(b"\x89PNG\r\n\x1a\n" + b"\0" * 20) == ("image", "image/png")
    assert sniff_media(b"RIFF\0\0\0\0WEBPVP8 ") == ("image", "image/webp")
    assert sniff_media(b"\x00\x00\x00\x20ftypisom") == ("video", "video/mp4")


def test_stage_turns_failures_into_error_rows(samples_dir, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    stage = DecodeStage(DecodeConfig(num_frames=4))
    out = stage({"uri": object_column([str(samples_dir / "astronaut_zoom.mp4"), str(empty), str(tmp_path / "missing.mp4")])})
    assert out["error"][0] == "" and out["frames"][0].shape[0] == 4
    assert "empty" in out["error"][1] and out["frames"][1].shape[0] == 0
    assert "not found" in out["error"][2]
    assert out["width"][0] == 480 and out["height"][0] == 360


def test_stage_reads_bytes_column(samples_dir):
    data = (samples_dir / "astronaut.jpg").read_bytes()
    out = DecodeStage()({"uri": object_column(["upload"]), "data": object_column([data])})
    assert out["error"][0] == "" and out["frames"][0].shape == (1, 512, 512, 3) and "data" not in out
