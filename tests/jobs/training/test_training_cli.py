"""`deepfakestream train`'s flags (jobs/cli/training.py): TrainConfig owns every default, the script's flags parse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from jobs.cli import app
from jobs.training.config import TrainConfig

SCRIPT = Path(__file__).parents[3] / "scripts" / "train_default.sh"


@pytest.fixture
def trained_with(monkeypatch):
    """Run `train ARGS` with the training itself stubbed out; returns the TrainConfig it would train with."""
    import jobs.training.train as train_module

    def run(*args: str) -> TrainConfig:
        seen = []
        datasets = [args[0], *(args[i + 1] for i, arg in enumerate(args) if arg == "--extra-dataset")]
        for folder in map(Path, datasets):  # the command checks each is prepared before it imports the training
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "manifest.json").touch()
        monkeypatch.setattr(train_module, "train", lambda cfg: seen.append(cfg) or {"history": []})
        result = CliRunner().invoke(app, ["train", *args])
        assert result.exit_code == 0, result.output
        return seen[0]

    return run


def test_a_flag_left_out_takes_train_configs_default_and_a_given_flag_overrides_it(tmp_path, trained_with):
    data, out = tmp_path / "crops", tmp_path / "run"
    defaults = TrainConfig(dataset=data, out_dir=out)
    assert trained_with(str(data), "-o", str(out)) == defaults
    given = trained_with(str(data), "-o", str(out), "--epochs", "2", "--no-sbi", "--gpu", "--codec-p", "0.25",
                         "--extra-dataset", str(tmp_path / "more"))
    changed = {"epochs": 2, "sbi": False, "use_gpu": True, "codec_p": 0.25, "extra_datasets": [tmp_path / "more"]}
    assert {k: getattr(given, k) for k in changed} == changed
    assert given.model_dump(exclude=set(changed)) == defaults.model_dump(exclude=set(changed))
    assert trained_with(str(data)).out_dir == Path("runs/train")  # the command's own default (TrainConfig has none)


def test_help_shows_train_configs_defaults():
    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=250)
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    for flag, default in (("--epochs", TrainConfig.model_fields["epochs"].default),
                          ("--codec-p", TrainConfig.model_fields["codec_p"].default)):
        assert re.search(rf"{flag} .*?\[default: \(?{re.escape(str(default))}\)?\]", text), (flag, text)


def test_every_flag_the_training_script_passes_parses(tmp_path, trained_with):
    script = SCRIPT.read_text()
    block = script[script.index("FAKES=--real-fakes"):script.index('[ "${STOP_AFTER:-}" = train ]')]
    passed = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", block))
    command = typer.main.get_command(app).commands["train"]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    assert passed and passed <= known, passed - known
    # one run of the script as it calls it (its defaults filled in)
    cfg = trained_with(
        str(tmp_path / "ffpp"), "--extra-dataset", str(tmp_path / "th"), "--output", str(tmp_path / "run"),
        "--encoder", "tf_efficientnet_lite0", "--input-mode", "rgb+srm", "--epochs", "6", "--patience", "3",
        "--max-steps-per-epoch", "250", "--codec-p", "0.5", "--capture-p", "0", "--parts-p", "0", "--source-balance", "sqrt",
        "--layer-decay", "0.85", "--blend-map", "0", "--drop-path", "0", "--mesh-p", "0", "--local-p", "0", "--sam-rho", "0",
        "--label-smoothing", "0", "--lr", "3e-4", "--cross-p", "0.5", "--ema-decay", "0.997", "--real-fakes", "--no-paired",
        "--threads", "2", "--seed", "1", "--version", "v-xb0.5-s1", "--resume", "--data-description", "toy")
    assert (cfg.epochs, cfg.max_steps_per_epoch, cfg.layer_decay, cfg.cross_p, cfg.ema_decay) == (6, 250, 0.85, 0.5, 0.997)
    assert cfg.real_fakes and not cfg.paired and cfg.resume and cfg.threads == 2 and cfg.seed == 1
    assert cfg.extra_datasets == [tmp_path / "th"] and cfg.data_description == "toy"


def test_train_into_another_runs_folder_says_run_exists_unless_overwrite(tmp_path, trained_with):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"another run's weights")
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / "manifest.json").touch()  # a prepared dataset, as far as the command's first check sees
    result = CliRunner().invoke(app, ["train", str(tmp_path / "crops"), "-o", str(run), "--epochs", "1"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "run_exists:" in said and "--overwrite" in said, said
    assert (run / "best.safetensors").read_bytes() == b"another run's weights"
    # the flag (training stubbed from here on)
    assert not trained_with(str(tmp_path / "crops")).overwrite and trained_with(str(tmp_path / "crops"), "--overwrite").overwrite


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate"])
def test_an_output_that_cannot_be_a_folder_is_output_error_not_a_traceback(tmp_path, samples_dir, command):
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{samples_dir / 'astronaut.jpg'},REAL\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / "manifest.json").touch()
    given = {"prepare": [str(labels)], "train": [str(tmp_path / "crops"), "--epochs", "1"], "evaluate": [str(labels)]}
    result = CliRunner().invoke(app, [command, *given[command], "-o", str(a_file / "out")])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and said.startswith("output_error: ") and "Not a directory" in said, said
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate"])
def test_a_refused_run_leaves_no_empty_output_folder_behind(tmp_path, command):
    """The input is missing: not_found / invalid_input, exit 2, and the folders the run made for its output are gone."""
    out = tmp_path / "runs" / "new"
    given = {"train": [str(tmp_path / "no-crops"), "--epochs", "1"], "evaluate": [str(tmp_path / "no-labels.csv")],
             "prepare": [str(tmp_path / "no-labels.csv")]}
    result = CliRunner().invoke(app, [command, *given[command], "-o", str(out)])
    assert result.exit_code == 2 and "no-" in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "runs").exists()
    kept = tmp_path / "kept"
    kept.mkdir()  # a folder that was there before stays, empty or not
    assert CliRunner().invoke(app, [command, *given[command], "-o", str(kept)]).exit_code == 2 and kept.is_dir()


@pytest.mark.parametrize("damage", [b"\xff\xfe\x00garbage\n", b'{"crop_size": 64,', b"[1, 2]", b'{"source": "x"}'])
def test_a_damaged_labels_csv_or_manifest_is_invalid_input_naming_the_file(tmp_path, damage):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(damage)
    result = CliRunner().invoke(app, ["prepare", str(labels), "-o", str(tmp_path / "out")])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and said.startswith(f"invalid_input: {labels}: ") and "Traceback" not in said, said
    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "manifest.json").write_bytes(damage)
    for command in (["train", str(crops), "-o", str(tmp_path / "run"), "--epochs", "1"],  # train reads it first
                    ["prepare", str(tmp_path / "elsewhere.csv"), "-o", str(crops)]):  # a rerun is held to it
        if command[0] == "prepare":
            (tmp_path / "elsewhere.csv").write_text("path,label\na.jpg,REAL\n")
        result = CliRunner().invoke(app, command)
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and said.startswith(f"invalid_input: {crops / 'manifest.json'}: "), said
