"""Crop datasets from real media, locally and on Ray (jobs/training/prepare.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jobs.training.prepare import decode_png, load_crop_table, prepare
from pipeline.config import load_settings


def test_prepare_and_evaluate_end_to_end(tmp_path, samples_dir, detector_env):
    from jobs.training.evaluate import evaluate

    media = tmp_path / "media"
    media.mkdir()
    for name in ["astronaut_zoom.mp4", "pair_pan.mp4", "astronaut.jpg", "astronauts_pair.jpg"]:
        shutil.copy(samples_dir / name, media / name)
    (media / "labels.csv").write_text("path,label,method,group\nastronaut_zoom.mp4,REAL,,a\nastronaut.jpg,FAKE,Toy,a\n"
                                      "pair_pan.mp4,REAL,,b\nastronauts_pair.jpg,FAKE,Toy,b\n")
    settings = load_settings(**{"detect.min_face_px": 20})
    manifest = prepare(media, tmp_path / "crops", settings, crop_size=64, frames_real=4, frames_fake=2,
                       split_fractions={"train": 0.5, "val": 0.5})
    assert manifest["failed"] == [] and manifest["faces"] > 0 and manifest["margin"] == 0.3  # the default, explicit
    table = load_crop_table(tmp_path / "crops")
    assert set(table.column("split").to_pylist()) == {"train", "val"}
    for row in table.to_pylist():
        crop = decode_png(row["crop_png"])
        assert crop.shape == (64, 64, 3)
        points = np.array(row["landmarks"]).reshape(5, 2)
        x1, y1, x2, y2 = row["box"]
        assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))
    # resumable: a second run reuses every per-video file
    again = prepare(media, tmp_path / "crops", settings, crop_size=64, frames_real=4, frames_fake=2,
                    split_fractions={"train": 0.5, "val": 0.5})
    assert all(r["skipped"] for r in again["results"])
    # but only with the first run's settings: another seed would put a video's crops in two splits
    for change in ({"seed": 1}, {"crop_size": 96}, {"settings": load_settings(**{"detect.min_face_px": 40})}):
        kwargs = {"settings": settings, "crop_size": 64, "frames_real": 4, "frames_fake": 2,
                  "split_fractions": {"train": 0.5, "val": 0.5}, **change}
        with pytest.raises(ValueError, match=f"{next(iter(change)).replace('settings', 'detect')}.* differ"):
            prepare(media, tmp_path / "crops", **kwargs)
    assert load_crop_table(tmp_path / "crops").num_rows == table.num_rows  # nothing was added
    smoke = prepare(media, tmp_path / "smoke", settings, crop_size=64, frames_real=4, frames_fake=2,
                    split_fractions={"train": 0.5, "val": 0.5}, limit=1)
    assert sum(s["videos"] for s in smoke["splits"].values()) == len(smoke["results"]) == 1  # counts what it prepared

    result = evaluate(media / "labels.csv", "all", load_settings(**{"decode.num_frames": 3}), tmp_path / "eval")
    assert result["videos"] == 4 and result["scored"] == 4
    assert (tmp_path / "eval" / "report-all.md").read_text().startswith("# Evaluation report")


class _NoDetection:
    """Stands in for VideoCropper: what a prepare would crop with, no detector run."""

    def __init__(self, settings, crop_size, out_dir, frames_real, frames_fake):
        self.crop_size = crop_size

    def process(self, video, split):
        return {"video": video.path, "split": split, "faces": 1, "error": "", "skipped": False}


@pytest.mark.parametrize("flag, env, expected", [(None, None, 224), (None, "96", 96), (64, "96", 64), (64, None, 64)])
def test_crop_size_is_the_flag_else_the_settings_else_the_models_default(tmp_path, samples_dir, monkeypatch, flag, env, expected):
    """`prepare --crop-size` > detect.crop_size (DFS_DETECT__CROP_SIZE, a config file) > ModelSpec's input size."""
    import json

    from typer.testing import CliRunner

    import jobs.training.prepare as prepare_module
    from jobs.cli import app
    from pipeline.card import ModelSpec

    assert ModelSpec().input_size == 224  # the default expected above
    monkeypatch.setattr(prepare_module, "VideoCropper", _NoDetection)
    if env:
        monkeypatch.setenv("DFS_DETECT__CROP_SIZE", env)
    (tmp_path / "labels.csv").write_text(f"path,label,group\n{samples_dir / 'astronaut.jpg'},REAL,a\n")
    out = tmp_path / "crops"
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "labels.csv"), "-o", str(out),
                                      *(["--crop-size", str(flag)] if flag else [])])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["crop_size"] == expected
    assert json.loads((out / "prepare.json").read_text())["detect"]["crop_size"] == expected
    # the function alone, as the command calls it
    again = prepare(tmp_path / "labels.csv", tmp_path / "direct", load_settings(), crop_size=flag)
    assert again["crop_size"] == expected


def _crop_files(out) -> dict[str, list[str]]:
    return {split.name: sorted(f.stem for f in split.glob("*.parquet")) for split in sorted((out / "crops").iterdir())}


def test_a_rerun_follows_the_labels_as_they_read_now(tmp_path, samples_dir):
    """A video moved to another split leaves the old one, a relabelled one is cut again, an unlisted one goes;
    the manifest counts what the folder holds."""
    import pyarrow.parquet as pq

    from jobs.training.prepare import video_key

    photo, pair, coffee = (str(samples_dir / n) for n in ("astronaut.jpg", "astronauts_pair.jpg", "coffee.jpg"))
    labels, out = tmp_path / "labels.csv", tmp_path / "crops"
    settings = load_settings(**{"detect.min_face_px": 20})

    def run():
        return prepare(labels, out, settings, crop_size=64, frames_real=1, frames_fake=1,
                       split_fractions={"train": 0.5, "val": 0.5})

    labels.write_text(f"path,label,split\n{photo},REAL,train\n{pair},FAKE,val\n{coffee},REAL,train\n")
    first = run()
    assert _crop_files(out) == {"train": sorted([video_key(photo), video_key(coffee)]), "val": [video_key(pair)]}
    labels.write_text(f"path,label,method,split\n{photo},REAL,,val\n{pair},REAL,,val\n")  # moved; relabelled; coffee gone
    second = run()
    assert _crop_files(out) == {"train": [], "val": sorted([video_key(photo), video_key(pair)])}
    assert not any(r["skipped"] for r in second["results"])  # both cut again
    table = load_crop_table(out)
    assert {(r["video"], r["label"], r["split"]) for r in table.to_pylist()} == {(photo, "REAL", "val"), (pair, "REAL", "val")}
    assert second["faces"] == table.num_rows == first["faces"] + 1  # a real keeps both faces of the pair, a fake one
    assert {n: s["videos"] for n, s in second["splits"].items()} == {"train": 0, "val": 2}
    assert all(r["skipped"] for r in run()["results"])  # as listed: nothing to cut
    # a file of an older prepare says what it was cut for in its rows only: as listed, it is kept
    older = out / "crops" / "val" / f"{video_key(photo)}.parquet"
    pq.write_table(pq.read_table(older).replace_schema_metadata(None), older)
    assert {r["video"]: r["skipped"] for r in run()["results"]}[photo]


def test_nothing_cropped_is_a_coded_failure_and_leaves_no_manifest(tmp_path, samples_dir):
    from typer.testing import CliRunner

    from jobs.cli import app

    (tmp_path / "bad.jpg").write_text("not an image")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\nbad.jpg,REAL\ngone.mp4,FAKE\n{samples_dir / 'coffee.jpg'},REAL\n")
    result = CliRunner().invoke(app, ["prepare", str(labels), "-o", str(tmp_path / "crops"), "--crop-size", "64",
                                      "--frames-real", "1", "--frames-fake", "1"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "nothing_cropped: no face cropped from the 3 videos" in said, said
    assert "2 could not be read" in said and "1 held no face" in said
    assert not (tmp_path / "crops" / "manifest.json").exists()  # a script that skips prepared folders tries again
    # nor its settings nor its crop files: the corrected retry, with other labels and another size, runs
    assert not (tmp_path / "crops").exists()
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(f"path,label,split\n{samples_dir / 'astronaut.jpg'},REAL,train\n")
    assert prepare(fixed, tmp_path / "crops", load_settings(), crop_size=96, frames_real=1, frames_fake=1)["faces"] == 1


def test_labels_split_as_no_split_is_refused_before_prepare_json_is_written(tmp_path, samples_dir, monkeypatch):
    import jobs.training.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "VideoCropper", _NoDetection)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label,split\n{samples_dir / 'astronaut.jpg'},REAL,training\n")
    with pytest.raises(ValueError, match="unknown split"):
        prepare(labels, tmp_path / "crops", load_settings())
    assert not (tmp_path / "crops" / "prepare.json").exists()
    fixed = tmp_path / "fixed.csv"  # the corrected labels, in a file of their own: another source, not refused
    fixed.write_text(f"path,label,split\n{samples_dir / 'astronaut.jpg'},REAL,train\n")
    assert prepare(fixed, tmp_path / "crops", load_settings())["faces"] == 1


@pytest.mark.slow
def test_prepare_on_ray_matches_local(tmp_path, samples_dir, ray_session):
    media = tmp_path / "media"
    media.mkdir()
    for name in ["astronaut_zoom.mp4", "astronauts_pair.jpg"]:
        shutil.copy(samples_dir / name, media / name)
    (media / "labels.csv").write_text("path,label,group\nastronaut_zoom.mp4,REAL,a\nastronauts_pair.jpg,FAKE,b\n")
    settings = load_settings()
    local = prepare(media, tmp_path / "local", settings, crop_size=64, frames_real=3, frames_fake=2, split_fractions={"train": 1.0})
    on_ray = prepare(media, tmp_path / "ray", settings, crop_size=64, frames_real=3, frames_fake=2,
                     split_fractions={"train": 1.0}, use_ray=True)
    assert on_ray["failed"] == [] and on_ray["faces"] == local["faces"] > 0
    a, b = load_crop_table(tmp_path / "local"), load_crop_table(tmp_path / "ray")
    assert a.column("crop_png").to_pylist() == b.column("crop_png").to_pylist()


def test_a_folder_prepared_before_prepare_json_is_held_to_its_manifest(tmp_path, samples_dir, monkeypatch):
    """data-cache's folders predate prepare.json: a rerun with another source, seed, size or margin is refused as
    with prepare.json, not run, where it would find every crop unlisted and delete the whole set. The manifest's
    source may be relative (as it was given): it reads from where prepare runs."""
    import json

    import pyarrow.parquet as pq

    import jobs.training.prepare as prepare_module
    from jobs.training.datasets import DEFAULT_SPLIT
    from jobs.training.prepare import CROP_SCHEMA, video_key

    monkeypatch.setattr(prepare_module, "VideoCropper", _NoDetection)
    monkeypatch.chdir(tmp_path)
    photo = str(samples_dir / "astronaut.jpg")
    Path("old.csv").write_text(f"path,label,split\n{photo},REAL,val\n")
    Path("new.csv").write_text(f"path,label,split\n{samples_dir / 'coffee.jpg'},REAL,val\n")
    out = tmp_path / "legacy"
    crop = out / "crops" / "val" / f"{video_key(photo)}.parquet"
    crop.parent.mkdir(parents=True)
    pq.write_table(CROP_SCHEMA.empty_table(), crop)
    (out / "manifest.json").write_text(json.dumps({"source": "old.csv", "crop_size": 224, "margin": 0.3, "seed": 0,
                                                   "frames_real": 48, "frames_fake": 16, "split_fractions": DEFAULT_SPLIT}))
    settings = load_settings()
    for change, differs in (({"source": "new.csv"}, "source"), ({"seed": 1}, "seed"), ({"crop_size": 96}, "crop_size"),
                            ({"settings": load_settings(**{"detect.margin": 0.15})}, "detect.margin")):
        kwargs = {"source": "old.csv", "out_dir": out, "settings": settings, **change}
        with pytest.raises(ValueError, match=f"\\({differs} differ; see .*manifest.json"):
            prepare(**kwargs)
        assert crop.exists() and not (out / "prepare.json").exists()
    assert prepare(tmp_path / "old.csv", out, settings)["faces"] == 1  # the same source, however written
    assert crop.exists() and json.loads((out / "prepare.json").read_text())["detect"]["margin"] == 0.3
    with pytest.raises(ValueError, match="source differ; see .*prepare.json"):  # from now on held to prepare.json
        prepare("new.csv", out, settings)
    assert crop.exists()
    for record in ("prepare.json", "manifest.json"):  # crops whose settings nothing records: refused too
        (out / record).unlink()
    with pytest.raises(ValueError, match="neither prepare.json nor manifest.json"):
        prepare("new.csv", out, settings)
    assert crop.exists()
