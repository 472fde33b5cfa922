"""Property-based tests (hypothesis) for URI normalisation and the allow-list, sniffing and decoding:
whatever the input, the answer is a typed refusal or a valid result, never a crash (issue 13)."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from media_fixtures import encode_video  # noqa: E402
from pipeline.config import DecodeConfig  # noqa: E402
from pipeline.decode import decode_bytes  # noqa: E402
from pipeline.errors import MediaError  # noqa: E402
from pipeline.media import normalize_uri, sniff_media  # noqa: E402
from serve.guard import UriNotAllowedError, check_uri  # noqa: E402

ALLOWED = ["s3://media/uploads/"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

uri_text = st.lists(st.sampled_from(list("sS3:/.%2eEfF5a0-_~?#*[]\\\n") + ["media", "uploads", "%2e", "%2E", "%2f", "%00"]),
                    max_size=24).map("".join)
uris = st.one_of(uri_text, st.builds(lambda s, k: f"{s}://media/uploads/{k}", st.sampled_from(["s3", "S3", "sS3"]), uri_text))


@FAST
@given(uris)
def test_normalisation_is_idempotent(uri):
    once = normalize_uri(uri)
    assert normalize_uri(once) == once


@FAST
@given(uris)
def test_allow_list_accepts_only_normalised_objects_under_the_prefix(uri):
    try:
        accepted = check_uri(uri, ALLOWED)
    except UriNotAllowedError:
        return
    assert accepted == normalize_uri(accepted)
    assert accepted.startswith("s3://media/uploads/")
    key = accepted[len("s3://media/uploads/"):]
    assert key and all(s not in ("", ".", "..") for s in key.split("/"))
    assert not any(ord(c) < 32 for c in accepted)


@FAST
@given(st.binary(max_size=600))
def test_sniffing_answers_or_refuses(head):
    try:
        kind, mime = sniff_media(head)
    except MediaError:
        return
    assert kind in ("image", "video") and "/" in mime


VIDEO = encode_video(32, 32, frames=4)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(VIDEO) - 1), st.binary(min_size=1, max_size=64), st.booleans())
def test_damaged_videos_decode_or_raise_media_error(offset, junk, truncate):
    data = VIDEO[:offset] if truncate else VIDEO[:offset] + junk + VIDEO[offset + len(junk):]
    try:
        media = decode_bytes(data, DecodeConfig(num_frames=2))
    except MediaError:
        return
    assert media.frames.ndim == 4 and media.frames.shape[0] >= 1
