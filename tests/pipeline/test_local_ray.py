"""The local Ray's token file (pipeline/local_ray.py): made private before Ray starts, where Ray would make it with
the umask (0644, readable from the first moment of ray.init, and for good if the start was cut short); one that
exists is left as it is, with a warning when others may read it."""

from __future__ import annotations

import logging
import stat

import pytest

from pipeline.local_ray import private_token


@pytest.fixture
def token_env(tmp_path, monkeypatch):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / ".ray" / "auth_token"


def test_a_token_ray_would_make_is_made_first_readable_by_its_owner_alone(token_env):
    private_token()
    assert stat.S_IMODE(token_env.stat().st_mode) == 0o600 and stat.S_IMODE(token_env.parent.stat().st_mode) == 0o700
    token = token_env.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # as Ray's own: 256 bits in hex
    private_token()
    assert token_env.read_text() == token  # made once, then Ray's to read


@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o640, True), (0o600, False)])
def test_a_token_that_exists_is_left_as_it_is_and_a_readable_one_said(token_env, caplog, mode, warned):
    token_env.parent.mkdir()
    token_env.write_text("f" * 64)
    token_env.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="pipeline.local_ray"):
        private_token()
    assert stat.S_IMODE(token_env.stat().st_mode) == mode and token_env.read_text() == "f" * 64
    assert ("may be read by other users" in caplog.text) is warned


@pytest.mark.parametrize("env", [{"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_TOKEN": "a" * 64}])
def test_no_file_is_made_where_no_token_file_is_used(token_env, monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    private_token()
    assert not token_env.exists()
