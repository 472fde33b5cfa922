"""Crop datasets from real media, locally and on Ray (jobs/training/prepare.py)."""

from __future__ import annotations

import shutil

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
