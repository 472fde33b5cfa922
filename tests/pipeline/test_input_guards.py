"""URI normalisation, log-line escaping, stable error codes and the server decoder's typed statuses
(issue 13). No Ray is started: the Decoder deployment's class is exercised directly."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from media_fixtures import audio_only_mp4, declare_size, encode_video
from pipeline import errors
from pipeline.batch import object_column
from pipeline.decode import DecodeStage
from pipeline.logsafe import log_safe
from pipeline.media import normalize_uri, read_media_bytes
from serve.guard import UriNotAllowedError, check_uri
from serve.problems import status_for

ALLOWED = ["s3://media/uploads/"]


@pytest.mark.parametrize("uri, normal", [
    ("S3://media/uploads/a.jpg", "s3://media/uploads/a.jpg"),
    ("Gs://b/k", "gs://b/k"),
    ("s3://media/uploads/%61%2Ejpg", "s3://media/uploads/a.jpg"),
    ("s3://media/uploads/%2e%2e/x", "s3://media/uploads/../x"),
    ("s3://media/uploads/a%2fb%0a", "s3://media/uploads/a%2Fb%0A"),  # reserved and control stay encoded
    ("s3://media/uploads/%2541", "s3://media/uploads/%2541"),  # decoded once only: not to 'A'
    ("/local/100%41.mp4", "/local/100%41.mp4"),  # a plain path may hold a literal %
])
def test_normalize_uri(uri, normal):
    assert normalize_uri(uri) == normal
    assert normalize_uri(normal) == normal  # idempotent: every layer may apply it


def test_allow_list_sees_and_returns_the_normalised_uri():
    # an upper-case scheme used to pass the allow-list and then fail in fsspec (a 502)
    assert check_uri("S3://media/uploads/a.jpg", ALLOWED) == "s3://media/uploads/a.jpg"
    assert check_uri("s3://media/uploads/%63lip.mp4", ALLOWED) == "s3://media/uploads/clip.mp4"
    assert check_uri("s3://media/uploads/x", ["S3://media/uploads"]) == "s3://media/uploads/x"
    for hidden in ("s3://media/uploads/%2e%2e/private/a.jpg", "s3://media/uploads/.%2E/private/a.jpg",
                   "s3://media/%75ploads-private/a.jpg", "S3://media/private/a.jpg"):
        with pytest.raises(UriNotAllowedError):
            check_uri(hidden, ALLOWED)


def test_reads_normalise_before_fsspec(samples_dir):
    path = samples_dir / "astronaut.jpg"
    expected = path.read_bytes()
    assert read_media_bytes("FILE://" + str(path), 10**8) == expected
    encoded = str(path).replace("astronaut", "%61stron%61ut")
    assert read_media_bytes("file://" + encoded, 10**8) == expected


def test_log_safe_escapes_control_characters():
    assert log_safe("clip\nWARNING forged line\r\x1b[31m.mp4") == "clip\\nWARNING forged line\\r\\x1b[31m.mp4"
    assert log_safe("a\u2028b é") == "a\\u2028b é"
    assert log_safe("x" * 600).endswith("…") and len(log_safe("x" * 600)) == 501


def test_a_newline_in_a_file_name_cannot_forge_a_log_line(caplog):
    name = "clip.mp4\nCRITICAL root: forged"
    with caplog.at_level(logging.WARNING, logger="pipeline.decode"):
        out = DecodeStage()({"uri": object_column([name]), "data": object_column([b"not media at all" * 4])})
    assert out["error"][0]
    messages = [r.getMessage() for r in caplog.records]
    assert messages and all("\n" not in m for m in messages)
    assert any("clip.mp4\\nCRITICAL" in m for m in messages)


def test_every_error_type_has_its_own_stable_code():
    types = [t for t in vars(errors).values() if isinstance(t, type) and issubclass(t, errors.DeepfakeStreamError)]
    codes = [t.code for t in types]
    assert len(types) >= 9 and len(set(codes)) == len(codes)
    assert errors.MediaTooLargeError("x").code == "media_too_large"
    assert errors.NoVideoStreamError("x").code == "no_video_stream"


@pytest.mark.parametrize("exc, status", [
    (errors.UnsupportedMediaError("x"), 415), (errors.MediaTooLargeError("x"), 413),
    (errors.MediaNotFoundError("x"), 404), (errors.EmptyMediaError("any wording"), 400),
    (errors.StorageError("any wording"), 502), (errors.NoVideoStreamError("x"), 422),
    (errors.MediaError("could not read, but a media fault"), 422), (RuntimeError("x"), 500),
])
def test_status_follows_the_type_not_the_message(exc, status):
    assert status_for(errors.code_of(exc, "internal_error")) == status


@pytest.fixture(scope="module")
def server_decoder():
    from pipeline.config import Settings
    from serve.deployments import Decoder

    return Decoder.func_or_class(Settings(decode={"num_frames": 4}).model_dump(mode="json"))


@pytest.mark.parametrize("make, status, text", [
    (lambda: declare_size(encode_video(), 16000, 16000), 413, "16000x16000"),
    (lambda: encode_video(frames=30, fps=1), 413, "30 s long"),  # serve.max_duration_s tightened below
    (lambda: audio_only_mp4(), 422, "audio but no video stream"),
    (lambda: b"", 400, "empty"),
    (lambda: b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 400, 422, "corrupt"),
    (lambda: encode_video(32, 32), 0, ""),
])
def test_server_decoder_statuses_come_from_error_types(server_decoder, make, status, text):
    stage = server_decoder.stage
    stage.config = stage.config.model_copy(update={"max_duration_s": 10.0})
    batch = server_decoder.decode_row("upload\nforged", make(), False)
    code = batch["error_code"][0]
    assert (status_for(code) if code else 0) == status and text in batch["error"][0]
    assert batch["frames"][0].shape[0] == (4 if status == 0 else 0)
    assert set(batch) >= {"uri", "frames", "timestamps", "width", "height", "media_type", "error", "error_code", "decode_ms", "explain"}
    assert np.isfinite(batch["decode_ms"][0])
