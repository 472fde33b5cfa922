"""Decode stage: sampling, timestamps, images as one frame, typed errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import DecodeConfig
from pipeline.decode import decode_bytes, sample_indices
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


def _assert_decoders_agree(paths, frames: int, threads: int = 1) -> None:
    pytest.importorskip("decord")
    for path in paths:
        data = path.read_bytes()
        a = decode_bytes(data, DecodeConfig(num_frames=frames, backend="decord"))
        b = decode_bytes(data, DecodeConfig(num_frames=frames, threads=threads))
        assert a.frame_indices.tolist() == b.frame_indices.tolist(), path
        assert np.array_equal(a.frames, b.frames), path
        assert (a.frame_count, a.fps, a.width, a.height) == (b.frame_count, b.fps, b.width, b.height)
        np.testing.assert_allclose(a.timestamps, b.timestamps, atol=1e-3)


@pytest.mark.parametrize("frames, threads", [(5, 1), (32, 1), (32, 2)])
def test_pyav_skipping_unreferenced_frames_gives_decords_frames_exactly(samples_dir, frames, threads):
    """The default decoder skips frames nothing references unless sampled; the sampled frames, their indices
    and timestamps must be exactly what decoding everything (decord) gives, with frame threads as without."""
    _assert_decoders_agree(sorted(samples_dir.glob("*.mp4")), frames, threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_decoders_agree_on_ffpp_videos(ffpp_dir, threads):
    """x264 720p with B-frames, as users' uploads are; with frame threads too."""
    _assert_decoders_agree([sorted(ffpp_dir.glob(f"{kind}/*.mp4"))[0] for kind in ("original", "FaceSwap")], 32, threads)


def _long_clip(frames: int = 1500, keyint: int = 50) -> bytes:
    """60 s at 25 fps, a keyframe every 2 s, B-frames: every frame's brightness and a moving bar differ."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=3", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), (i * 23) % 256, np.uint8)
            image[:, (i // 7) % 64] = 255 - image[0, 0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize("threads", [1, 2])
def test_long_clip_jumps_between_samples_and_keeps_decords_frames(threads):
    """Samples far apart are reached by seeking to their keyframe: the same frames, a fraction of the decoding."""
    from pipeline.decode import _packet_index, _sampled_frames

    pytest.importorskip("decord")
    data = _long_clip()
    a = decode_bytes(data, DecodeConfig(num_frames=16, backend="decord"))
    b = decode_bytes(data, DecodeConfig(num_frames=16, threads=threads))
    assert a.frame_indices.tolist() == b.frame_indices.tolist() and np.array_equal(a.frames, b.frames)
    packets, pts, keyframes = _packet_index(data)
    assert packets == 1500 and len(keyframes) == 30
    indices = sample_indices(packets, 16)
    jumped, decoded_jumping = _sampled_frames(data, DecodeConfig(threads=threads), indices, pts, keyframes)
    through, decoded_through = _sampled_frames(data, DecodeConfig(threads=threads), indices, pts)
    assert np.array_equal(jumped.array, through.array) and len(jumped) == 16
    assert decoded_jumping < 0.6 * decoded_through


def test_unreferenced_frames_are_really_skipped(samples_dir):
    from pipeline.decode import _packet_index, _sampled_frames

    data = (samples_dir / "astronaut_swap.mp4").read_bytes()
    packets, pts, _ = _packet_index(data)
    assert packets == len(pts)
    indices = sample_indices(len(pts), 8)
    _, everything = _sampled_frames(data, DecodeConfig(), indices, None)
    assert everything == indices[-1] + 1
    for threads in (1, 2):  # frame threads skip as much
        kept, decoded = _sampled_frames(data, DecodeConfig(threads=threads), indices, pts)
        assert kept.filled.all() and len(kept.filled) == len(indices)
        assert decoded < 0.8 * everything  # the clip has B-frames: most unsampled ones were never decoded


@pytest.mark.parametrize("brands, mime", [
    (b"heic\x00\x00\x00\x00mif1heic", "image/heic"),
    (b"mif1\x00\x00\x00\x00mif1heic", "image/heic"),
    (b"avif\x00\x00\x00\x00avifmif1", "image/avif"),
    (b"mif1\x00\x00\x00\x00mif1avif", "image/avif"),  # a generic HEIF file holding AV1 is AVIF
    (b"isom\x00\x00\x02\x00isomiso2avc1mp41", "video/mp4"),
])
def test_ftyp_brands_tell_photos_from_videos(brands, mime):
    head = (8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands + b"\x00" * 64
    assert sniff_media(head)[1] == mime


def test_decord_failing_mid_stream_says_the_same_thing_whichever_thread_hit_the_damage(caplog):
    """decord's own text names the decoder thread that met the damage first; the row's message never does."""
    import logging

    pytest.importorskip("decord")

    from media_fixtures import encode_video
    from pipeline.errors import MediaError

    data = bytearray(encode_video(frames=60, format="matroska"))
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)  # the second half of the stream zeroed
    with caplog.at_level(logging.DEBUG, logger="pipeline.decode"), pytest.raises(MediaError) as caught:
        decode_bytes(bytes(data), DecodeConfig(backend="decord"))
    assert str(caught.value) == "corrupt or unreadable video: frames could not be decoded (truncated or damaged)"
    assert caught.value.code == "media_corrupt" and "decord failed mid-stream: " in caplog.text
