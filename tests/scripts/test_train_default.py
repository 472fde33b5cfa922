"""scripts/train_default.sh: refuses what it cannot do before writing anything; crops follow the labels; runs of
another crop size train beside the default's; a rebuild is named and described by what it was given.

Each run is the real script in a copy of the scripts beside the real virtualenv (so nothing lands in this tree:
the script writes data-cache/, installs into pipeline/checkpoints and docs/reports of the tree it lives in), on a
SHARED_DATA_DIR made of the bundled samples."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "pipeline" / "samples"
# UTKFace names whose hash puts them in each split (scripts/real_sets.py, utk_split)
UTK = {"train": ["2_0_0_20170102000002.jpg", "3_0_0_20170103000003.jpg", "4_0_0_20170104000004.jpg"],
       "val": ["15_0_0_20170105000015.jpg"], "test": ["1_0_0_20170101000001.jpg"]}


def tiny_shared(root: Path) -> Path:
    """A SHARED_DATA_DIR in the layout the script reads, of the bundled samples: FF++ with its own split column."""
    files = {"ffpp-c23/original/a.mp4": "astronaut_zoom.mp4", "ffpp-c23/Deepfakes/a_b.mp4": "astronaut_swap.mp4",
             "ffpp-c23/original/c.jpg": "astronaut.jpg", "ffpp-c23/FaceSwap/c_d.jpg": "astronauts_pair.jpg",
             "talking-heads/liveportrait_x.mp4": "astronaut_zoom.mp4", "talking-heads/hdtf_y.mp4": "pair_pan.mp4",
             "faces/x/astronaut.jpg": "astronaut.jpg",
             **{f"utkface/images/{name}": "astronaut.jpg" for names in UTK.values() for name in names}}
    for path, sample in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / sample, root / path)
    (root / "ffpp-c23" / "labels.csv").write_text(
        "path,label,method,group,split\noriginal/a.mp4,REAL,original,a,train\nDeepfakes/a_b.mp4,FAKE,Deepfakes,a,train\n"
        "original/c.jpg,REAL,original,c,val\nFaceSwap/c_d.jpg,FAKE,FaceSwap,c,val\n")
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    """The script and its helpers in a tree of their own, with this tree's virtualenv."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    for name in ("train_default.sh", "real_sets.py", "data_note.py"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "repo" / "scripts" / name)
    (tmp_path / "repo" / ".venv").symlink_to(ROOT / ".venv")
    return tmp_path / "repo"


def run(tree: Path, shared: Path | str, timeout: int = 30, **env: str) -> subprocess.CompletedProcess:
    """The script at 64 px, one run of one step; past ``timeout`` it is stopped with the prepares it started."""
    environ = {**os.environ, "CROP": "64", "EPOCHS": "1", "STEPS": "1", "CROSSES": "0", "SEEDS": "0", "LLD_RUN": "",
               "THREADS": "1", **env}
    with subprocess.Popen(["bash", str(tree / "scripts" / "train_default.sh"), str(shared), "runs/t"], cwd=tree,
                          env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as script:
        try:
            out, err = script.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(script.args, script.returncode, out, err)


def _written(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.parts[len(tree.parts)] not in ("scripts", ".venv"))


@pytest.mark.parametrize("stop_after", ["training", "Prepare", "all"])
def test_a_stop_after_it_does_not_know_is_refused_before_anything_runs(tree, tmp_path, stop_after):
    """A typo ran everything and installed over the shipped detector and its reports."""
    done = run(tree, tiny_shared(tmp_path / "shared"), STOP_AFTER=stop_after)
    assert done.returncode == 2 and done.stderr.startswith(f"invalid_configuration: STOP_AFTER={stop_after}:"), done.stderr
    assert _written(tree) == []


@pytest.mark.parametrize("missing", ["ffpp-c23", "utkface", "talking-heads", "faces", "everything"])
def test_an_incomplete_shared_data_dir_is_refused_in_one_line_and_the_labels_csvs_are_kept(tree, tmp_path, missing):
    """It died with no message, after overwriting data-cache/*.csv with header-only files."""
    shared = tiny_shared(tmp_path / "shared")
    shutil.rmtree(shared if missing == "everything" else shared / missing)
    (tree / "data-cache").mkdir()
    for name in ("utkface", "talking-heads", "faces"):
        (tree / "data-cache" / f"{name}.csv").write_text("an earlier run's labels\n")
    done = run(tree, shared, STOP_AFTER="prepare")
    said = done.stderr.strip()
    assert done.returncode == 2 and said.startswith("not_found: SHARED_DATA_DIR ") and "\n" not in said, said
    assert (missing if missing != "everything" else "ffpp-c23") in said
    assert all((tree / "data-cache" / f"{n}.csv").read_text() == "an earlier run's labels\n"
               for n in ("utkface", "talking-heads", "faces"))
    assert _written(tree) == ["data-cache", *(f"data-cache/{n}.csv" for n in ("faces", "talking-heads", "utkface"))]


def test_a_utkface_split_without_photos_is_said_not_a_silent_stop(tree, tmp_path):
    """``grep`` finding no validation row stopped the script under ``set -e`` without a word."""
    shared = tiny_shared(tmp_path / "shared")
    for name in UTK["val"]:
        (shared / "utkface" / "images" / name).unlink()
    done = run(tree, shared, timeout=300, STOP_AFTER="prepare")
    assert done.returncode == 2 and "invalid_input: data-cache/utkface-val.csv" in done.stderr, done.stderr[-2000:]
    assert (tree / "data-cache/utkface-val.csv").read_text().splitlines() == ["path,label,method,group,split"]
    assert (tree / "data-cache/ffpp64m15/manifest.json").is_file()  # the other sets were prepared


def _manifest(tree: Path, name: str) -> dict:
    return json.loads((tree / "data-cache" / name / "manifest.json").read_text())


@pytest.mark.slow
def test_crops_follow_the_labels_other_crops_train_beside_and_a_rebuild_says_what_it_is(tree, tmp_path):
    shared = tiny_shared(tmp_path / "shared")
    first = run(tree, shared, timeout=600, STOP_AFTER="train")
    assert first.returncode == 0, first.stderr[-3000:]
    (run_64,) = (tree / "runs/t").glob("train-*")
    card = json.loads((run_64 / "best.json").read_text())
    today = datetime.now(timezone.utc).strftime("%Y%m%d")
    # named after its settings, never the shipped detector's name; described by what was prepared
    assert card["version"] == f"ffpp-utk-th-sbi-lite0-64m15-ema-rebuild-{today}-xb0-s0"
    assert (f"({shared}/ffpp-c23: 2 original, 2 manipulated videos; identity-group split 50/25/25, train split used: "
            "reals as SBI sources + its Deepfakes/FaceSwap fakes); UTKFace aligned face photos (3 of 5 for training, "
            "1 validation, 1 held out); 2 real talking-head clips") in card["training"]["dataset"]

    # a labels change after the crops were cut: UTKFace loses two training photos, the crops follow
    assert _manifest(tree, "utk64m15")["splits"]["train"]["videos"] == 3
    for name in UTK["train"][1:]:
        (shared / "utkface" / "images" / name).unlink()
    again = run(tree, shared, timeout=600, STOP_AFTER="prepare")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _manifest(tree, "utk64m15")["splits"]["train"]["videos"] == 1
    assert len(list((tree / "data-cache/utk64m15/crops/train").glob("*.parquet"))) == 1

    # another crop size into the same WORK: its own run, not a resume of the 64 px one (which trained nothing)
    before = (run_64 / "best.safetensors").read_bytes()
    other = run(tree, shared, timeout=600, STOP_AFTER="train", CROP="96")
    assert other.returncode == 0, other.stderr[-3000:]
    assert "resuming" not in other.stderr
    sizes = {p.parent.name: json.loads(p.read_text())["architecture"]["input_size"] for p in (tree / "runs/t").glob("*/best.json")}
    assert sizes == {"train-xb0-s0-64m15": 64, "train-xb0-s0-96m15": 96}
    assert (run_64 / "best.safetensors").read_bytes() == before
