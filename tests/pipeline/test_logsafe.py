"""Credentials out of what is stored, printed and logged (pipeline/logsafe.py: redact_uri, redact_uris,
redact_secrets, log_safe)."""

from __future__ import annotations

import pytest

from pipeline.logsafe import log_safe, redact_secrets, redact_uri, redact_uris


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:hunter2pass@127.0.0.1:8080/astronaut.jpg", "http://127.0.0.1:8080/astronaut.jpg"),
    ("https://token@host/a.mp4#t=3", "https://host/a.mp4#t=3"),
    ("HTTPS://a:p@ss@host/x", "HTTPS://host/x"),  # an unescaped @ in the password: the host is after the last
    ("https://b.s3.amazonaws.com/k.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F1&X-Amz-Date=1"
     "&X-Amz-Security-Token=tok&X-Amz-Signature=abc",
     "https://b.s3.amazonaws.com/k.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=1"
     "&X-Amz-Security-Token=REDACTED&X-Amz-Signature=REDACTED"),
    ("https://acct.blob.core.windows.net/c/v.mp4?sv=2022&SIG=s%2Bx&se=2030", "https://acct.blob.core.windows.net/c/v.mp4?sv=2022&SIG=REDACTED&se=2030"),
    ("https://h/p?Signature=1&access_token=2&token=3&key=4&keys=5&flag", "https://h/p?Signature=REDACTED&access_token=REDACTED&token=REDACTED&key=REDACTED&keys=5&flag"),
    ("s3://bucket/dir/a@b.jpg", "s3://bucket/dir/a@b.jpg"),  # an @ in a key is not user-info
    # an object store's key may hold "?": two objects, not one URL with a secret (they would share one row)
    ("s3://b/v/clip?token=A.mp4", "s3://b/v/clip?token=A.mp4"), ("gs://b/x?sig=1.jpg", "gs://b/x?sig=1.jpg"),
    ("https://storage.googleapis.com/b/o.jpg?X-Goog-Algorithm=GOOG4&X-Goog-Credential=sa%40p&X-Goog-Signature=5e1f",
     "https://storage.googleapis.com/b/o.jpg?X-Goog-Algorithm=GOOG4&X-Goog-Credential=REDACTED&X-Goog-Signature=REDACTED"),
    ("https://h/p?client_secret=s&refresh_token=t&x-api_key=k&page=2", "https://h/p?client_secret=REDACTED&refresh_token=REDACTED&x-api_key=REDACTED&page=2"),
    # API keys (any name ending in key), Azure Functions' code, session ids, passwords: kept before
    ("https://h/f?api-key=1&x-api-key=2&code=3&secret_key=4&access_key=5&private_key=6&apikey=7&page=2",
     "https://h/f?api-key=REDACTED&x-api-key=REDACTED&code=REDACTED&secret_key=REDACTED&access_key=REDACTED"
     "&private_key=REDACTED&apikey=REDACTED&page=2"),
    ("https://h/f?sessionid=1&JSESSIONID=2&PHPSESSID=3&pwd=4&pass=5&passwd=6&auth=7&Authorization=8&keys=9",
     "https://h/f?sessionid=REDACTED&JSESSIONID=REDACTED&PHPSESSID=REDACTED&pwd=REDACTED&pass=REDACTED&passwd=REDACTED"
     "&auth=REDACTED&Authorization=REDACTED&keys=9"),
    ("s3://b/v/clip?api-key=A.mp4", "s3://b/v/clip?api-key=A.mp4"),  # still a key
    # chained fsspec URLs: each link on its own (only a leading scheme was seen: the credentials were kept)
    ("simplecache::http://alice:pw@host/x?token=T", "simplecache::http://host/x?token=REDACTED"),
    ("zip://inner.mp4::https://u:p@h/a.zip?sig=1&v=2", "zip://inner.mp4::https://h/a.zip?sig=REDACTED&v=2"),
    ("filecache::s3://b/v/clip?token=A.mp4", "filecache::s3://b/v/clip?token=A.mp4"),
    ("abfss://media@acct.dfs.core.windows.net/up/a.mp4", "abfss://media@acct.dfs.core.windows.net/up/a.mp4"),  # a container
    # "::" that chains no link (an IPv6 host, a path): one URL, its query masked (a split there had kept it)
    ("https://[2001:db8::1]/v.mp4?sig=S", "https://[2001:db8::1]/v.mp4?sig=REDACTED"),
    ("https://h/clips/a::b.mp4?X-Amz-Signature=S&v=1", "https://h/clips/a::b.mp4?X-Amz-Signature=REDACTED&v=1"),
    ("https://h/v.mp4?monkey=1&turnkey=2", "https://h/v.mp4?monkey=1&turnkey=2"),  # names that only end in "key"
    ("/media/user:pw@clip.mp4", "/media/user:pw@clip.mp4"),  # a plain path is a file name, kept as it is
    ("clip.mp4", "clip.mp4"),
])
def test_redact_uri_drops_user_info_and_masks_secret_query_values_only(uri, shown):
    assert redact_uri(uri) == shown
    assert redact_uri(shown) == shown  # idempotent: a stored URI redacted again is the same key


def test_redact_uris_cleans_every_uri_in_a_message_and_keeps_its_punctuation():
    text = "could not read http://a:pw@h:1/x.jpg?token=abc: refused (see https://u:p@h/y?sig=1). s3://b/k.mp4, fine"
    assert redact_uris(text) == ("could not read http://h:1/x.jpg?token=REDACTED: refused (see https://h/y?sig=REDACTED). "
                                 "s3://b/k.mp4, fine")


# what botocore and fsspec log at DEBUG (recorded from `score -v` on an s3:// object with AWS_SESSION_TOKEN set)
SIGNED = ("DEBUG botocore.auth: CanonicalRequest:\nHEAD\n/b/k.jpg\n\nhost:127.0.0.1:9000\n"
          "x-amz-security-token:TOKENSECRET\n\nhost;x-amz-date;x-amz-security-token\ne3b0c442\n"
          "DEBUG botocore.auth: Signature:\nSIGNEDHEX\n"
          "DEBUG botocore.endpoint: Sending http request: <AWSPreparedRequest method=HEAD, url=http://127.0.0.1:9000/b/k.jpg,"
          " headers={'X-Amz-Date': b'20261207T200436Z', 'X-Amz-Security-Token': b'TOKENSECRET', 'Authorization': "
          "b'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261207/us-east-1/s3/aws4_request, "
          "SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=SIGNEDHEX'}>")


def test_redact_secrets_masks_headers_fields_and_key_ids_around_uris():
    assert redact_secrets(SIGNED) == (
        "DEBUG botocore.auth: CanonicalRequest:\nHEAD\n/b/k.jpg\n\nhost:127.0.0.1:9000\n"
        "x-amz-security-token:REDACTED\n\nhost;x-amz-date;x-amz-security-token\ne3b0c442\n"
        "DEBUG botocore.auth: Signature:\nREDACTED\n"
        "DEBUG botocore.endpoint: Sending http request: <AWSPreparedRequest method=HEAD, url=http://127.0.0.1:9000/b/k.jpg,"
        " headers={'X-Amz-Date': b'20261207T200436Z', 'X-Amz-Security-Token': b'REDACTED', 'Authorization': b'REDACTED'}>")
    assert redact_secrets("Authorization: Bearer abc.def\nnext") == "Authorization: REDACTED\nnext"
    assert redact_secrets("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F1&X-Amz-Date=1") == (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=1")  # a canonical query, no URI
    assert redact_secrets('{"AccessKeyId": "ASIAIOSFODNN7EXAMPLE", "SecretAccessKey": "s/k+", "Token": "t"}') == (
        '{"AccessKeyId": "REDACTED", "SecretAccessKey": "REDACTED", "Token": "REDACTED"}')
    assert redact_secrets("<SessionToken>t</SessionToken>") == "<SessionToken>REDACTED</SessionToken>"
    assert redact_secrets("fsspec.http: Retrieve file size for http://a:pw@h/x?X-Amz-Signature=s&v=1") == (
        "fsspec.http: Retrieve file size for http://h/x?X-Amz-Signature=REDACTED&v=1")


@pytest.mark.parametrize("line", [
    "Calculating signature using v4 auth.",
    "scanned 3 objects of s3://b/in/clip?token=A.mp4 in 1.5 s (token bucket full)",  # a key's ? stays whole
    "An error occurred (ExpiredToken) when calling the HeadObject operation: The provided token has expired.",
    "CALL: head_object - ({},) - {'Bucket': 'uploads', 'Key': 'incoming/coffee.jpg'}",
    "SignedHeaders=host;x-amz-date;x-amz-security-token",
    "decode failed for /data/ASIANFACES20240001.mp4 and AKIAPROJECTNOTES.txt",  # no key ids: 16 characters, a digit
    # a path ending in a secret's name, then an OSError: no value (its "[Errno" was masked)
    "could not make Ray's token file /x/.ray/auth_token: [Errno 30] Read-only file system: '/x'",
])
def test_redact_secrets_leaves_everything_else_as_it_is(line):
    assert redact_secrets(line) == line


def test_a_long_line_is_redacted_in_linear_time():
    """A scheme was tried from every position of a long run of letters and digits (8 s for 80,000 characters), on
    every line the commands log: 400,000 characters now take milliseconds (the bound is 100 times that)."""
    import time

    started = time.perf_counter()
    assert redact_secrets("x" * 400_000 + " see http://h/p?token=1") == "x" * 400_000 + " see http://h/p?token=REDACTED"
    assert time.perf_counter() - started < 5


def test_log_safe_never_logs_a_credential():
    assert log_safe("decode failed for http://alice:hunter2pass@h/a.jpg\nforged") == "decode failed for http://h/a.jpg\\nforged"


def test_printable_writes_out_what_a_terminal_would_act_on_and_keeps_the_rest():
    from pipeline.logsafe import printable

    assert printable("s3://b/\x1b]0;pwned\x07\x1b[2J.mp4") == "s3://b/\\x1b]0;pwned\\x07\\x1b[2J.mp4"
    assert printable("a\x00b\tc\nd\x7fe\x9bf") == "a\\x00b\\tc\\nd\\x7fe\\x9bf"  # C0, DEL, C1 (CSI)
    assert printable("clip [final] é 日本 🎬 \\x1b.mp4") == "clip [final] é 日本 🎬 \\x1b.mp4"
    assert printable(None) == "" and printable(3) == "3"
