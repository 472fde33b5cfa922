"""One configuration (pipeline/config.py): file < environment < flags, for every section including
``scan`` and ``serve``; a key that names no setting fails with one line naming the key and its source."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.config import UnknownSettingError, load_settings


@pytest.fixture()
def clean_env(monkeypatch):
    import os

    for name in [n for n in os.environ if n.upper().startswith("DFS_") and n.upper() != "DFS_CLASSIFY__CHECKPOINT"]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_unknown_key_in_a_yaml_file_is_refused(clean_env, tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("decode:\n  num_frame: 4\n")
    with pytest.raises(UnknownSettingError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "'decode.num_frame'" in message and str(config) in message and "\n" not in message


def test_unknown_section_and_scan_key_in_a_file_are_refused(clean_env, tmp_path):
    config = tmp_path / "settings.json"
    config.write_text('{"scan": {"commit_evry": 3}}')
    with pytest.raises(UnknownSettingError, match="'scan.commit_evry' in config file"):
        load_settings(config)
    config.write_text('{"decoder": {"num_frames": 3}}')
    with pytest.raises(UnknownSettingError, match="'decoder'"):
        load_settings(config)


def test_unknown_environment_variable_is_refused(clean_env):
    clean_env.setenv("DFS_DECODE__NUM_FRAME", "4")
    with pytest.raises(UnknownSettingError, match="'decode.num_frame' in environment variable DFS_DECODE__NUM_FRAME"):
        load_settings()


@pytest.mark.parametrize("name", ["DFS_DECODE__NUM_FRAMES__X", "DFS_", "DFS_DECODE____NUM_FRAMES"])
def test_a_key_below_a_plain_value_or_an_empty_name_is_refused(clean_env, name):
    clean_env.setenv(name, "1")
    with pytest.raises(UnknownSettingError, match=f"in environment variable {name}$"):
        load_settings()


def test_variables_that_are_not_settings_and_free_dicts_are_allowed(clean_env):
    clean_env.setenv("DFS_SHARED_DATA", "/nowhere")
    clean_env.setenv("DFS_LOG_LEVEL", "INFO")
    clean_env.setenv("DFS_SERVE__STORAGE_OPTIONS", '{"anon": true}')
    assert load_settings().serve.storage_options == {"anon": True}
    clean_env.delenv("DFS_SERVE__STORAGE_OPTIONS")
    clean_env.setenv("DFS_SERVE__STORAGE_OPTIONS__ANON", "true")  # a free dict's own key, one level down (as text)
    assert load_settings().serve.storage_options == {"anon": "true"}


def test_flags_override_environment_override_file(clean_env, tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("decode:\n  num_frames: 8\nscan:\n  commit_every: 10\n  max_error_rate: 0.2\n")
    assert load_settings(config).decode.num_frames == 8
    clean_env.setenv("DFS_DECODE__NUM_FRAMES", "12")
    clean_env.setenv("DFS_SCAN__COMMIT_EVERY", "20")
    settings = load_settings(config)
    assert (settings.decode.num_frames, settings.scan.commit_every, settings.scan.max_error_rate) == (12, 20, 0.2)
    settings = load_settings(config, **{"decode.num_frames": 16, "scan.commit_every": 30})
    assert (settings.decode.num_frames, settings.scan.commit_every, settings.scan.max_error_rate) == (16, 30, 0.2)
    with pytest.raises(UnknownSettingError, match="'scan.commit' in command-line flags"):
        load_settings(config, **{"scan.commit": 1})


def test_the_cli_says_it_in_one_line_and_exits_2(clean_env, tmp_path):
    from jobs.cli import app

    config = tmp_path / "settings.yaml"
    config.write_text("detect:\n  margn: 0.2\n")
    result = CliRunner().invoke(app, ["score", "--config", str(config), "nothing.jpg"])
    assert result.exit_code == 2
    assert "unknown setting 'detect.margn' in config file" in result.output


def test_a_typo_in_the_rayservice_settings_is_refused_and_attributed_to_them(clean_env):
    from pydantic import ValidationError

    from serve.app import app_builder
    from serve.config import ServeConfig

    with pytest.raises(UnknownSettingError, match=r"'serve.max_uplod_bytes' in the application's args.settings"):
        app_builder({"settings": {"serve": {"max_uplod_bytes": 1}}})
    with pytest.raises(ValidationError, match="max_uplod_bytes"):
        ServeConfig(max_uplod_bytes=1)  # the section itself forbids it too, however it is built


def test_a_null_in_a_settings_tree_means_not_given(clean_env):
    """A deploy config's `gpus: null` must leave the environment's (or the settings file's) value in force."""
    clean_env.setenv("DFS_SERVE__GPUS", "0.5")
    settings = load_settings(tree={"serve": {"gpus": None, "storage_options": {}}, "decode": {"num_frames": None}})
    assert settings.serve.gpus == 0.5 and settings.decode.num_frames == 32
    assert load_settings(tree={"decode": {"num_frames": 8}}).decode.num_frames == 8


def test_sources_are_merged_before_the_rules_across_fields(clean_env):
    """The environment's max_inflight and the tree's max_ongoing_requests are judged together, not the
    environment's alone against the default (which said 64 must exceed 104)."""
    clean_env.setenv("DFS_SERVE__MAX_INFLIGHT", "100")
    serve = load_settings(tree={"serve": {"max_ongoing_requests": 200}}).serve
    assert (serve.max_inflight, serve.max_ongoing_requests) == (100, 200)


def test_a_bad_value_names_where_it_came_from(clean_env, tmp_path):
    from pydantic import ValidationError

    clean_env.setenv("DFS_SCAN__PLAN", "both")
    with pytest.raises(ValidationError, match=r"scan.plan\n.*\(from environment variable DFS_SCAN__PLAN\)"):
        load_settings()
    clean_env.delenv("DFS_SCAN__PLAN")
    config = tmp_path / "settings.yaml"
    config.write_text("decode:\n  num_frames: 0\n")
    with pytest.raises(ValidationError, match=rf"\(from config file {config}\)"):
        load_settings(config)
    with pytest.raises(ValidationError, match=r"\(from command-line flags\)"):
        load_settings(config, **{"decode.num_frames": 0})  # the flag's value, the one in force
    clean_env.setenv("DFS_SERVE__MAX_INFLIGHT", "100")  # a rule across fields names every source of the section
    with pytest.raises(ValidationError, match=r"\(104\).*\(from environment variable DFS_SERVE__MAX_INFLIGHT\)"):
        load_settings()


def test_a_list_in_the_environment_must_be_json_and_says_so(clean_env):
    clean_env.setenv("DFS_SCAN__EXTENSIONS", ".mp4")
    with pytest.raises(ValueError, match=r"^environment variable DFS_SCAN__EXTENSIONS must be a JSON list"):
        load_settings()
    clean_env.setenv("DFS_SCAN__EXTENSIONS", '[".mp4"]')
    assert load_settings().scan.extensions == (".mp4",)
    clean_env.setenv("DFS_SERVE", '{"port": 9000, "max_queued": 1}')  # a whole section as JSON, a key over it
    clean_env.setenv("DFS_SERVE__PORT", "9001")
    assert (load_settings().serve.port, load_settings().serve.max_queued) == (9001, 1)


@pytest.mark.parametrize("name, text", [("upper.YAML", "decode:\n  num_frames: 5\n"), ("upper.Json", '{"decode": {"num_frames": 5}}'),
                                        ("upper.TOML", "[decode]\nnum_frames = 5\n")])
def test_the_format_is_told_by_the_extension_in_any_case(clean_env, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    assert load_settings(tmp_path / name).decode.num_frames == 5


@pytest.mark.parametrize("name, text, message", [
    ("settings.cfg", "decode:\n  num_frames: 5\n", "unknown format '.cfg'; name it .yaml, .yml, .json, .toml"),
    ("settings", "{}", "unknown format '(no extension)'"),
    ("settings.toml", "[decode\n", "is not valid TOML: "),
    ("settings.json", "", "is not valid JSON: Expecting value"),
    ("settings.yaml", "decode: [num_frames: 4\n", "is not valid YAML: "),
])
def test_an_unreadable_config_file_is_named_in_its_error(clean_env, tmp_path, name, text, message):
    config = tmp_path / name
    config.write_text(text)
    with pytest.raises(ValueError) as caught:
        load_settings(config)
    assert str(caught.value).startswith(f"config file {config}") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_config_file_that_is_not_text_is_named_in_its_error(clean_env, tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=f"^config file {config} is not valid YAML: 'utf-8' codec"):
        load_settings(config)


@pytest.mark.parametrize("blank", ["", " ", "."])
def test_a_blank_checkpoint_is_refused_not_the_current_directory(clean_env, blank):
    from pydantic import ValidationError

    clean_env.setenv("DFS_CLASSIFY__CHECKPOINT", blank)
    with pytest.raises(ValidationError, match="classify.checkpoint must name a .safetensors file"):
        load_settings()


@pytest.mark.parametrize("value", ["", "none", "None"])
def test_a_blank_onnx_cache_means_no_cache_not_the_current_directory(clean_env, value):
    clean_env.setenv("DFS_CLASSIFY__ONNX_CACHE", value)
    assert load_settings().classify.onnx_cache is None
    clean_env.setenv("DFS_CLASSIFY__ONNX_CACHE", "/tmp/graphs")
    assert str(load_settings().classify.onnx_cache) == "/tmp/graphs"


def test_the_onnx_cache_default_needs_no_home(clean_env, tmp_path):
    """HOME unset and a uid without a passwd entry (a container's): Path.home() raised at import, so every command
    died, `query` and `report` too. Now XDG_CACHE_HOME, else ~/.cache, else this user's folder under the temp dir."""
    import tempfile
    from pathlib import Path

    from pipeline.config import temp_onnx_cache

    clean_env.delenv("XDG_CACHE_HOME", raising=False)
    clean_env.setenv("HOME", str(tmp_path))
    assert load_settings().classify.onnx_cache == tmp_path / ".cache" / "deepfakestream" / "onnx"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_settings().classify.onnx_cache == tmp_path / "xdg" / "deepfakestream" / "onnx"
    clean_env.delenv("XDG_CACHE_HOME")
    clean_env.delenv("HOME")

    def home():
        raise RuntimeError("Could not determine home directory.")

    clean_env.setattr(Path, "home", staticmethod(home))
    assert load_settings().classify.onnx_cache == temp_onnx_cache()

    def no_temp_dir():
        raise FileNotFoundError("No usable temporary directory found")

    clean_env.setattr(tempfile, "gettempdir", no_temp_dir)
    assert load_settings().classify.onnx_cache is None  # no cache: settings never fail for it


@pytest.mark.parametrize("key", ["decode.max_duration_s", "serve.gpus", "serve.request_timeout_s", "scan.lease_seconds"])
def test_infinity_is_refused(clean_env, key):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=key.split(".")[1]):
        load_settings(**{key: float("inf")})
    clean_env.setenv(f"DFS_{key.replace('.', '__').upper()}", "inf")
    with pytest.raises(ValidationError, match=key.split(".")[1]):
        load_settings()


def test_a_gpu_ray_gave_that_torch_cannot_see_runs_on_the_cpu_and_says_so(caplog):
    """A model actor granted a GPU by Ray (ray.get_gpu_ids() not empty) where torch sees none (a CPU-only image in the
    GPU group, a driver too old) ran on the CPU without a word. It still runs there (a GPU declared with --num-gpus
    on a machine without one is how the tests run the split plan), once per process with a warning naming why."""
    import logging

    import torch

    from pipeline.config import _ray_gpu_ids, resolve_device

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        assert resolve_device("auto", ray_gpus=[]) == "cpu" and not caplog.records  # no GPU asked, none missed
        assert resolve_device("auto") == "cpu" and _ray_gpu_ids() == [] and not caplog.records  # outside a Ray worker
        assert [resolve_device("auto", ray_gpus=["7"]) for _ in range(2)] == ["cpu", "cpu"]  # detector and classifier
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("Ray gave this process GPU 7 but torch sees no CUDA device (") and "models run on the CPU" in said
    assert ("a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}") in said
