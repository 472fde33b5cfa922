"""Inputs the reader and sniffer used to refuse wrongly: M2TS/AVCHD (192-byte packets), a directory given as a
path (not_found, as errors.py says), local file names fsspec would parse as URLs (``x::y.jpg``), animations
with more frames than can be decoded in reasonable time (refused from the header), and HTTP: a refused connection is
the store failing, not the object missing, and no message quotes the URI's credentials."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, features

from helpers import refused_url, served
from media_fixtures import animated_image, encode_video, m2ts
from pipeline import images
from pipeline.batch import object_column
from pipeline.config import DecodeConfig
from pipeline.decode import DecodeStage, decode_bytes
from pipeline.errors import MediaNotFoundError, MediaTooLargeError, StorageError
from pipeline.media import read_media_bytes, sniff_media


@pytest.fixture(scope="module")
def mts() -> bytes:
    return m2ts(encode_video(64, 48, frames=20, format="mpegts"))


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buf, "JPEG")
    return buf.getvalue()


def test_m2ts_is_sniffed_as_mpeg_ts(mts):
    assert mts[0] != 0x47 and (mts[4], mts[196]) == (0x47, 0x47)  # the sync bytes where M2TS has them
    assert sniff_media(mts[:512]) == ("video", "video/mp2t")
    assert sniff_media(encode_video(format="mpegts")[:512]) == ("video", "video/mp2t")  # 188-byte TS as before


@pytest.mark.parametrize("backend", ["pyav", "decord"])  # decord cannot read (M2)TS from memory: PyAV reads it
def test_m2ts_decodes_with_either_backend_setting(mts, backend):
    media = decode_bytes(mts, DecodeConfig(num_frames=4, backend=backend))
    assert media.mime == "video/mp2t" and media.kind == "video"
    assert media.frames.shape == (4, 48, 64, 3) and media.frame_count == 20
    brightness = (np.asarray(media.frame_indices) * 23) % 256  # encode_video: frame i is 23 i grey
    assert np.abs(media.frames.mean(axis=(1, 2, 3)) - brightness).max() < 6


def test_m2ts_file_is_scored_by_the_decode_stage(mts, tmp_path):
    path = tmp_path / "00001.MTS"
    path.write_bytes(mts)
    out = DecodeStage(DecodeConfig(num_frames=4))({"uri": object_column([str(path)])})
    assert (out["error_code"][0], out["media_type"][0], out["frames"][0].shape[0]) == ("", "video/mp2t", 4)


@pytest.mark.parametrize("typed", ["{dir}", "{dir}/", "file://{dir}"])
def test_a_directory_is_not_found(tmp_path, typed):
    uri = typed.format(dir=tmp_path)
    for limit in (10**8, 10):  # not 'too large' either, whatever a directory's st_size says
        with pytest.raises(MediaNotFoundError, match="is a directory") as caught:
            read_media_bytes(uri, limit)
        assert caught.value.code == "not_found"
    out = DecodeStage()({"uri": object_column([uri])})
    assert out["error_code"][0] == "not_found" and "is a directory" in out["error"][0]


def test_over_http_a_missing_object_is_not_found_a_refused_connection_a_storage_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_jpeg())
    with served(tmp_path) as base:
        with_credentials = base.replace("http://", "http://alice:hunter2pass@")
        assert read_media_bytes(f"{with_credentials}/a.jpg?token=s3cret", 10**8) == _jpeg()  # read with them
        with pytest.raises(MediaNotFoundError) as missing:
            read_media_bytes(f"{with_credentials}/gone.jpg?token=s3cret", 10**8)
    down = refused_url().replace("http://", "http://alice:hunter2pass@")
    with pytest.raises(StorageError) as refused:
        read_media_bytes(f"{down}/a.jpg?token=s3cret", 10**8)
    assert missing.value.code == "not_found" and refused.value.code == "storage_error"
    assert str(missing.value) == f"not found: {base}/gone.jpg?token=REDACTED"
    assert str(refused.value).startswith(f"could not read {down.replace('alice:hunter2pass@', '')}/a.jpg?token=REDACTED: ")
    for said in (str(missing.value), str(refused.value)):
        assert "hunter2pass" not in said and "s3cret" not in said


@pytest.mark.parametrize("status, code", [(403, "access_denied"), (401, "access_denied"), (500, "storage_error")])
def test_over_http_a_refusal_is_access_denied(status, code):
    """An expired or wrong pre-signed URL answers 403: the credentials' fault (access_denied), not a store failing."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pipeline.errors import AccessDeniedError

    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(StorageError) as refused:
            read_media_bytes(f"http://127.0.0.1:{server.server_address[1]}/a.jpg?X-Amz-Signature=s3cret", 10**8)
    finally:
        server.shutdown()
        server.server_close()
    assert refused.value.code == code and isinstance(refused.value, AccessDeniedError) == (code == "access_denied")
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("name", ["x::y.jpg", "zip:foo.jpg", "data:a.jpg", "s3:b.jpg", "a::b::c.jpg"])
def test_a_local_name_is_read_as_named_not_as_an_fsspec_url(tmp_path, monkeypatch, name):
    jpeg = _jpeg()
    (tmp_path / name).write_bytes(jpeg)
    assert read_media_bytes(str(tmp_path / name), 10**8) == jpeg
    monkeypatch.chdir(tmp_path)
    assert read_media_bytes(name, 10**8) == jpeg  # relative to the working directory, as before
    out = DecodeStage(DecodeConfig(num_frames=2))({"uri": object_column([str(tmp_path / name)])})
    assert out["error_code"][0] == "" and out["media_type"][0] == "image/jpeg"


def test_plain_paths_keep_their_local_meaning(tmp_path, monkeypatch):
    jpeg = _jpeg()
    (tmp_path / "100%41.jpg").write_bytes(jpeg)
    assert read_media_bytes(str(tmp_path / "100%41.jpg"), 10**8) == jpeg  # a literal %, never decoded
    assert read_media_bytes("file:" + str(tmp_path / "100%41.jpg"), 10**8) == jpeg  # file:/path, as fsspec read it
    monkeypatch.setenv("HOME", str(tmp_path))
    assert read_media_bytes("~/100%41.jpg", 10**8) == jpeg
    with pytest.raises(MediaNotFoundError):
        read_media_bytes(str(tmp_path / "x::missing.jpg"), 10**8)


@pytest.mark.parametrize("format", ["WEBP", "PNG", pytest.param(
    "AVIF", marks=pytest.mark.skipif(not features.check("avif"), reason="no AVIF"))])
def test_animation_over_the_default_frame_bound_is_refused_before_decoding(monkeypatch, format):
    """decode.max_frames is off by default; an animation is still bounded (PIL decodes every frame to time it)."""
    data = animated_image(format, [40] * 6)
    assert DecodeConfig().max_frames is None
    assert decode_bytes(data, DecodeConfig(num_frames=2)).frame_count == 6  # under the bound: read as before
    monkeypatch.setattr(images, "MAX_ANIMATION_FRAMES", 5)

    def no_decoding(*args, **kwargs):
        raise AssertionError("frames decoded before the frame count was checked")

    monkeypatch.setattr(images, "read_frames", no_decoding)
    with pytest.raises(MediaTooLargeError) as caught:
        decode_bytes(data, DecodeConfig(num_frames=2))
    assert caught.value.code == "media_too_large"
    assert str(caught.value) == "animation has 6 frames, over the 5-frame limit"
    with pytest.raises(MediaTooLargeError, match="over the 4-frame limit"):  # a lower configured limit comes first
        decode_bytes(data, DecodeConfig(num_frames=2, max_frames=4))
    with pytest.raises(MediaTooLargeError, match="over the 5-frame limit"):  # a higher one (the server's) does not lift it
        decode_bytes(data, DecodeConfig(num_frames=2, max_frames=36_000))
    monkeypatch.undo()
    assert decode_bytes(data, DecodeConfig(num_frames=2, max_frames=20_000)).frame_count == 6


def test_default_animation_bound_is_sane():
    assert 1_000 <= images.MAX_ANIMATION_FRAMES <= 100_000
