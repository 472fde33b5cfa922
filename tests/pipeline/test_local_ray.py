"""The local Ray's token file (pipeline/local_ray.py): made private before Ray starts, where Ray would make it with
the umask (0644, readable from the first moment of ray.init, and for good if the start was cut short); one that
exists is left as it is, with a warning when others may read it."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import pytest

from pipeline.local_ray import TokenFileError, advice, private_token


@pytest.fixture
def token_env(tmp_path, monkeypatch):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.setenv(name, "")  # recorded, so what private_token sets is undone too
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
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


def test_a_token_path_given_is_where_the_token_is_made(token_env, tmp_path, monkeypatch):
    given = tmp_path / "x" / "tok"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(given))
    private_token()
    assert stat.S_IMODE(given.stat().st_mode) == 0o600 and len(given.read_text()) == 64
    assert not token_env.parent.exists()


def _no_home(monkeypatch):
    monkeypatch.delenv("HOME")

    def home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(home))


@pytest.mark.parametrize("home", ["unset", "read-only"])
def test_without_a_writable_home_the_token_is_made_private_under_the_temp_dir_and_named_to_ray(
        token_env, tmp_path, monkeypatch, caplog, home):
    """A container's uid with no passwd entry and HOME unset, or a read-only home: Ray writes ~/.ray/auth_token and
    `scan` and `serve` failed with "Read-only file system" (the reason logged at DEBUG only)."""
    if home == "unset":
        _no_home(monkeypatch)
    else:  # a file where the folder would be: mkdir fails for root too
        token_env.parent.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="pipeline.local_ray"):
        private_token()
    made = Path(os.environ["RAY_AUTH_TOKEN_PATH"])  # Ray's variable: its loader and the processes it starts read it
    assert made.parent.parent == tmp_path / "tmp" and made.name == "auth_token" and len(made.read_text()) == 64
    assert stat.S_IMODE(made.stat().st_mode) == 0o600 and stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    assert str(made) in caplog.text and "set RAY_AUTH_TOKEN_PATH (a file) or RAY_AUTH_TOKEN" in caplog.text


def test_a_token_that_exists_in_a_read_only_home_is_ray_s_to_read(token_env, monkeypatch):
    token_env.parent.mkdir()
    token_env.write_text("f" * 64)
    token_env.chmod(0o600)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "open", read_only)
    private_token()
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ


def test_with_nowhere_to_write_a_token_the_error_says_which_variable_to_set(token_env, tmp_path, monkeypatch):
    _no_home(monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp" / "gone"))
    with pytest.raises(TokenFileError, match="set RAY_AUTH_TOKEN_PATH to a file in a writable folder, or RAY_AUTH_TOKEN"):
        private_token()


def test_a_temp_dir_too_long_for_ray_s_sockets_is_said_with_its_fix():
    too_long = OSError("validate_socket_filename failed: AF_UNIX path length cannot exceed 107 bytes: /t/x/ray/s/p")
    assert "set RAY_TMPDIR" in advice(too_long) and advice(OSError("other")) == ""
