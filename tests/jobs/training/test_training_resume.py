"""Resuming a run: exactly where it stopped, only with its own settings (jobs/training/resume.py)."""

from __future__ import annotations

import pytest
import torch

from jobs.training.train import fit

from training_fixtures import fit_stop_after_one, toy_config, toy_dataset


def test_resumed_run_continues_exactly(tmp_path):
    full = fit(toy_config(tmp_path / "a", epochs=2))
    interrupted = toy_config(tmp_path / "c", epochs=2)
    fit_stop_after_one(interrupted)
    resumed = fit(interrupted.model_copy(update={"resume": True}))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=False)["model"]
    c = torch.load(tmp_path / "c" / "run" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k].float(), c[k].float(), atol=1e-5) for k in a)
    assert resumed["history"][-1]["train_loss"] == pytest.approx(full["history"][-1]["train_loss"], rel=1e-4)


def test_resume_refuses_other_settings_with_a_code(tmp_path):
    from jobs.training.resume import ResumeMismatchError

    interrupted = toy_config(tmp_path, epochs=2)
    fit_stop_after_one(interrupted)
    saved = (tmp_path / "run" / "last.pt").read_bytes()
    for change in ({"layer_decay": 0.8}, {"ema_decay": 0.9}, {"epochs": 3}, {"lr": 1e-3}):
        with pytest.raises(ResumeMismatchError) as caught:
            fit(interrupted.model_copy(update={"resume": True, **change}))
        assert caught.value.code == "resume_mismatch" and next(iter(change)) in str(caught.value)
        assert (tmp_path / "run" / "last.pt").read_bytes() == saved  # nothing trained, nothing overwritten
    resumed = fit(interrupted.model_copy(update={"resume": True, "threads": 1, "patience": 4, "version": "v2"}))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]  # how this machine runs it may change


def test_resume_refuses_crops_of_another_size_or_margin(tmp_path):
    """The dataset's path may change on resume, its crops' geometry may not: one network trained on two sizes. A
    last.pt saved before it recorded the geometry is held to its run's card."""
    from jobs.training.resume import ResumeMismatchError

    interrupted = toy_config(tmp_path, epochs=2)  # 32 px crops, margin 0.2
    fit_stop_after_one(interrupted)
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=False)
    assert state["crop_geometry"] == {"crop_size": 32, "margin": 0.2}
    del state["crop_geometry"]  # as saved before last.pt kept it
    torch.save(state, last)
    saved = last.read_bytes()
    for size, margin in ((48, 0.2), (32, 0.3)):
        other = toy_dataset(tmp_path / f"toy{size}-{margin}", size=size, margin=margin)
        with pytest.raises(ResumeMismatchError, match=f"crop_size=32, margin=0.2; .* crop_size={size}, margin={margin}") as caught:
            fit(interrupted.model_copy(update={"resume": True, "dataset": other}))
        assert caught.value.code == "resume_mismatch" and last.read_bytes() == saved
    moved = toy_dataset(tmp_path / "moved")  # the same crops elsewhere: resumed
    assert [h["epoch"] for h in fit(interrupted.model_copy(update={"resume": True, "dataset": moved}))["history"]] == [1, 2]


def test_resume_of_a_run_older_than_a_setting_holds_it_to_its_default(tmp_path):
    """A last.pt saved before a setting existed ran with its default (new options keep the old behaviour):
    resuming with another value is refused, with the default it goes on."""
    from jobs.training.resume import ResumeMismatchError

    interrupted = toy_config(tmp_path, epochs=2)
    fit_stop_after_one(interrupted)
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=False)
    del state["config"]["parts_p"]  # as if saved before --parts-p existed
    torch.save(state, last)
    with pytest.raises(ResumeMismatchError, match="parts_p=0.0"):
        fit(interrupted.model_copy(update={"resume": True, "parts_p": 0.3}))
    resumed = fit(interrupted.model_copy(update={"resume": True}))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_a_new_run_over_another_runs_checkpoints_is_refused_unless_overwrite(tmp_path):
    from jobs.training.resume import RunExistsError
    from jobs.training.train import train

    config = toy_config(tmp_path, epochs=1)
    fit(config)
    run = config.out_dir
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for again in (config, config.model_copy(update={"num_workers": 2})):  # data-parallel: refused before Ray starts
        with pytest.raises(RunExistsError, match="last.pt and best.safetensors; without --resume") as caught:
            train(again)
        assert caught.value.code == "run_exists"
    (run / "last.pt").unlink()  # --resume with nothing to continue would start over the best checkpoint
    with pytest.raises(RunExistsError, match="--resume found no last.pt"):
        fit(config.model_copy(update={"resume": True}))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == {k: v for k, v in before.items() if k != "last.pt"}
    (run / "best.json").write_text((run / "best.json").read_text().replace('"version": "dev"', '"version": "older"'))
    fit(config.model_copy(update={"overwrite": True, "version": "new"}))
    assert '"version": "new"' in (run / "best.json").read_text() and (run / "last.pt").exists()



def test_overwrite_removes_the_old_run_only_once_the_new_runs_inputs_pass(tmp_path):
    """`--overwrite` decides up front, but the old run's files go only just before the first epoch: a new run refused
    for its data (one class in val, no train crops, no dataset) leaves the old run as it was."""
    import shutil

    from jobs.training.validate import OneClassValidationError

    config = toy_config(tmp_path, epochs=1)
    fit(config)
    before = {p.name: p.read_bytes() for p in config.out_dir.iterdir()}
    again = config.model_copy(update={"overwrite": True, "version": "new"})
    crops = config.dataset / "crops"
    refusals = ((crops / "val" / "val1.parquet", OneClassValidationError, "no fake one"),  # val fakes moved away
                (crops / "train", ValueError, "no training crops"), (config.dataset, FileNotFoundError, "manifest.json"))
    for moved, error, says in refusals:
        shutil.move(moved, tmp_path / "aside")
        with pytest.raises(error, match=says):
            fit(again)
        assert {p.name: p.read_bytes() for p in config.out_dir.iterdir()} == before
        shutil.move(tmp_path / "aside", moved)
    fit(again)  # its inputs pass: now it replaces the old run
    assert '"version": "new"' in (config.out_dir / "best.json").read_text()

def test_a_damaged_last_pt_is_a_coded_refusal_not_a_traceback(tmp_path):
    from pipeline.errors import CheckpointError

    config = toy_config(tmp_path, epochs=1)
    config.out_dir.mkdir()
    (config.out_dir / "last.pt").write_bytes(b"PK\x03\x04 cut short by a full disk")
    with pytest.raises(CheckpointError, match="last.pt cannot be read.*--overwrite") as caught:
        fit(config.model_copy(update={"resume": True}))
    assert caught.value.code == "checkpoint_error"
