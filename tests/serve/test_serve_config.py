"""The online API's settings (serve/config.py): a bad allow-list entry fails the settings, before any server starts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from serve.config import ServeConfig


@pytest.mark.parametrize("prefix, why", [
    ("file:///tmp/", "scheme"), ("s3://*/x/", "characters"), ("s3://b:1/x/", "one bucket"), ("s3:///x/", "one bucket"),
    ("/etc/", "not an object-store URI"),
    # entries no URI could ever match: check_uri refuses every URI with these characters or segments
    ("s3://b/in?x", "characters"), ("s3://b/#x", "characters"), ("s3://b/in::x/", "characters"),
    ("s3://b/in\\x/", "characters"), ("s3://b/in\x01/", "characters"), ("s3://b/in\x7f/", "characters"),
    ("s3://b/in/*/", "characters"), ("s3://b/../x/", "segment"), ("s3://b/in/./x/", "segment"),
    ("s3://b/in/%2e%2e/x/", "segment"), ("s3://b/in//", "segment"), ("s3://b//in/", "segment"), ("s3://b//", "segment"),
    ("s3://b/" + "k" * 1024 + "/", "longer than"),
])
def test_a_bad_allowed_prefix_fails_the_settings(prefix, why):
    with pytest.raises(ValidationError, match=why) as info:
        ServeConfig(allowed_uri_prefixes=["s3://fine/uploads/", prefix])
    assert len(info.value.errors()) == 1 and "\n" not in info.value.errors()[0]["msg"]  # one line, like the others


@pytest.mark.parametrize("prefix", ["s3://fine/uploads/", "s3://fine/uploads", "s3://fine", "s3://fine/", "S3://fine/a%2e%2e/"])
def test_good_allowed_prefixes_pass_and_match_what_check_uri_accepts(prefix):
    from serve.guard import check_uri

    assert ServeConfig(allowed_uri_prefixes=[prefix]).allowed_uri_prefixes == [prefix]
    key = "a../x.jpg" if "%2e" in prefix else "uploads/x.jpg"
    assert check_uri(f"s3://fine/{key}", [prefix]) == f"s3://fine/{key}"


MISSING_FS = [scheme for scheme, package in [("gs", "gcsfs"), ("gcs", "gcsfs"), ("az", "adlfs"), ("abfs", "adlfs")]
              if importlib.util.find_spec(package) is None]


@pytest.mark.skipif(not MISSING_FS, reason="gcsfs and adlfs are both installed")
@pytest.mark.parametrize("scheme", MISSING_FS or ["gs"])
def test_a_prefix_whose_filesystem_is_not_installed_fails_the_settings(scheme):
    """Else every request under it would be a 502 from the decoder's read."""
    with pytest.raises(ValidationError, match=f"no filesystem for {scheme}:// is installed") as info:
        ServeConfig(allowed_uri_prefixes=[f"{scheme}://bucket/in/"])
    assert "\n" not in info.value.errors()[0]["msg"]


def test_the_filesystem_check_asks_fsspec(monkeypatch):
    import fsspec

    def missing(protocol):
        raise ImportError("Install s3fs to access S3\nsecond line")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(ValidationError, match=r"no filesystem for s3:// is installed \(Install s3fs to access S3 second line\)"):
        ServeConfig(allowed_uri_prefixes=["s3://bucket/in/"])


@pytest.mark.parametrize("prefix", ["file:///tmp/", "s3://b/in?x", f"{(MISSING_FS or ['file'])[0]}://b/in/"])
def test_serve_with_a_bad_allowed_prefix_says_so_in_one_line_and_starts_nothing(prefix):
    env = {**os.environ, "DFS_SERVE__ALLOWED_URI_PREFIXES": f'["{prefix}"]', "RAY_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "serve", "--port", "18123"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "invalid_configuration: " in proc.stderr and prefix in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("host", ["", " ", "http://x", "a b", "-a", "a..b", "1.2.3.4:80", "[::1]"])
def test_a_host_that_is_neither_an_address_nor_a_name_is_refused(host):
    """A blank host made Ray listen on every interface (and print http://:PORT)."""
    with pytest.raises(ValidationError, match="host"):
        ServeConfig(host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost", "api.example.com", "my_service"])
def test_addresses_and_host_names_are_accepted(host):
    assert ServeConfig(host=host).host == host


@pytest.mark.parametrize("prefix", ["api", "/api/", "/a/{id}", "/a}"])
def test_a_route_prefix_ray_would_refuse_fails_the_settings(prefix):
    with pytest.raises(ValidationError, match="route_prefix must be '/' or start with '/'"):
        ServeConfig(route_prefix=prefix)
    assert ServeConfig(route_prefix="/api/v1").route_prefix == "/api/v1"


@pytest.mark.parametrize("key", ["request_timeout_s", "body_timeout_s", "detect_batch_wait_s",
                                 "max_duration_s", "ingress_cpus", "gpus"])
def test_waits_and_limits_are_finite(key):
    with pytest.raises(ValidationError, match=key):
        ServeConfig(**{key: float("inf")})
    with pytest.raises(ValidationError, match=key):
        ServeConfig(**{key: float("nan")})


@pytest.mark.parametrize("key, cap", [("request_timeout_s", 86400), ("body_timeout_s", 86400), ("retry_after_s", 86400),
                                      ("detect_batch_wait_s", 60), ("classify_batch_wait_s", 60)])
def test_waits_have_a_cap(key, cap):
    assert getattr(ServeConfig(**{key: cap}), key) == cap
    with pytest.raises(ValidationError, match=key):
        ServeConfig(**{key: cap + 1})


@pytest.mark.parametrize("args, env", [(["--host", ""], {}), ([], {"DFS_SERVE__HOST": ""}),
                                       ([], {"DFS_SERVE__ROUTE_PREFIX": "/api/"})])
def test_serve_with_a_blank_host_or_a_bad_route_prefix_exits_2_before_ray(args, env):
    env = {**os.environ, **env, "RAY_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "serve", "--port", "18123", *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "invalid_configuration: " in proc.stderr
    assert ("serve.host" in proc.stderr or "route_prefix" in proc.stderr) and "Traceback" not in proc.stderr
