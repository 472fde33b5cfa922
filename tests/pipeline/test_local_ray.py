"""The local Ray's token file (pipeline/local_ray.py): Ray writes it with the umask; it is made private."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.local_ray import private_token


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
def test_rays_token_file_is_readable_by_its_owner_alone(tmp_path, monkeypatch, mode):
    token = tmp_path / "auth_token"
    token.write_text("0123456789abcdef" * 2)
    token.chmod(mode)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    private_token()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == "0123456789abcdef" * 2


def test_no_token_file_is_nothing_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    private_token()
    assert not os.path.exists(tmp_path / "none")
