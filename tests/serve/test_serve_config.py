"""The online API's settings (serve/config.py): a bad allow-list entry fails the settings, before any server starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from serve.config import ServeConfig


@pytest.mark.parametrize("prefix, why", [("file:///tmp/", "scheme"), ("s3://*/x/", "one bucket"), ("/etc/", "not an object-store URI")])
def test_a_bad_allowed_prefix_fails_the_settings(prefix, why):
    with pytest.raises(ValidationError, match=why):
        ServeConfig(allowed_uri_prefixes=["s3://fine/uploads/", prefix])
    assert ServeConfig(allowed_uri_prefixes=["s3://fine/uploads/"]).allowed_uri_prefixes == ["s3://fine/uploads/"]


def test_serve_with_a_bad_allowed_prefix_says_so_in_one_line_and_starts_nothing():
    env = {**os.environ, "DFS_SERVE__ALLOWED_URI_PREFIXES": '["file:///tmp/"]', "RAY_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "serve", "--port", "18123"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "invalid configuration" in proc.stderr and "file:///tmp/" in proc.stderr
    assert "Traceback" not in proc.stderr
