"""Labelled sets in their three layouts, and splits that never share an identity (jobs/training/datasets.py)."""

from __future__ import annotations

import json

import pytest

from jobs.training.datasets import LabelledVideo, assign_identity_groups, load_labelled_videos, split_by_group


def _ffpp_like() -> list[LabelledVideo]:
    videos = []
    for a, b in [("001", "002"), ("003", "004"), ("005", "006"), ("007", "008"), ("009", "010")]:
        videos += [LabelledVideo(f"o/{a}.mp4", "REAL", "original", [a]), LabelledVideo(f"o/{b}.mp4", "REAL", "original", [b]),
                   LabelledVideo(f"d/{a}_{b}.mp4", "FAKE", "Deepfakes", [a, b]), LabelledVideo(f"d/{b}_{a}.mp4", "FAKE", "Deepfakes", [b, a])]
    assign_identity_groups(videos)
    return videos


def test_splits_never_leak_an_identity():
    videos = _ffpp_like()
    splits = split_by_group(videos, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    seen = {name: {i for v in members for i in v.identities} for name, members in splits.items()}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert sum(len(m) for m in splits.values()) == len(videos) and all(splits.values())
    again = split_by_group(_ffpp_like(), {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    assert [v.path for v in again["val"]] == [v.path for v in splits["val"]]


def test_preassigned_split_is_kept():
    videos = _ffpp_like() + [LabelledVideo("extra/a.jpg", "REAL", "original", ["zz"], "extra", "train")]
    splits = split_by_group(videos, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    assert any(v.path == "extra/a.jpg" for v in splits["train"])
    with pytest.raises(ValueError, match="unknown split"):
        split_by_group([LabelledVideo("x", "REAL", split="holdout")], {"train": 1.0})


def test_three_layouts(tmp_path):
    ff = tmp_path / "ff"
    for rel in ["original_sequences/youtube/c23/videos/001.mp4", "manipulated_sequences/FaceSwap/c23/videos/001_002.mp4"]:
        (ff / rel).parent.mkdir(parents=True, exist_ok=True)
        (ff / rel).write_bytes(b"x")
    videos = load_labelled_videos(ff)
    assert [(v.label, v.method) for v in videos] == [("REAL", "original"), ("FAKE", "FaceSwap")]
    assert videos[0].group == videos[1].group
    dfdc = tmp_path / "dfdc" / "part0"
    dfdc.mkdir(parents=True)
    (dfdc / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE", "original": "a.mp4"}}))
    videos = load_labelled_videos(tmp_path / "dfdc")
    assert [v.label for v in videos] == ["REAL", "FAKE"] and videos[0].group == videos[1].group
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,label,method,group\nx.mp4,real,,g1\ny.mp4,FAKE,Face2Face,g1\n")
    videos = load_labelled_videos(csv_file)
    assert [(v.label, v.method, v.group) for v in videos] == [("REAL", "original", "g1"), ("FAKE", "Face2Face", "g1")]
    csv_file.write_text("path,label\nx.mp4,maybe\n")
    with pytest.raises(ValueError, match="REAL or FAKE"):
        load_labelled_videos(csv_file)


@pytest.mark.parametrize("text, why", [
    ("file,kind\na.mp4,REAL\n", "missing label, path"),
    ("path,label\na.mp4\n", "line 2: every row needs a path and a label"),
    ("path,label\n,REAL\n", "line 2: every row needs a path and a label"),
    ("path,label\na.mp4,MAYBE\n", "label must be REAL or FAKE"),
])
def test_a_malformed_labels_csv_is_a_value_error_naming_the_file(tmp_path, text, why):
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    with pytest.raises(ValueError, match=why) as caught:
        load_labelled_videos(labels)
    assert str(labels) in str(caught.value)


def test_a_spreadsheets_byte_order_mark_and_a_dfdc_entry_without_label(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes("\ufeffpath,label\na.mp4,REAL\n".encode("utf-8"))
    assert [v.label for v in load_labelled_videos(labels)] == ["REAL"]
    dfdc = tmp_path / "dfdc"
    dfdc.mkdir()
    (dfdc / "metadata.json").write_text('{"a.mp4": {"split": "train"}}')
    with pytest.raises(ValueError, match="entry 'a.mp4' needs a label"):
        load_labelled_videos(dfdc)


def test_a_file_listed_twice_differently_is_refused_naming_both_rows_and_alike_counts_once(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,split\na.mp4,REAL,train\nb.mp4,FAKE,val\n./a.mp4,REAL,val\n")
    with pytest.raises(ValueError, match=r"a.mp4 is listed twice, differently: line 2 \(REAL.*split train\) and line 4 \(REAL.*split val\)"):
        load_labelled_videos(labels)
    labels.write_text("path,label\na.mp4,REAL\na.mp4,FAKE\n")
    with pytest.raises(ValueError, match="line 2 .* line 3"):
        load_labelled_videos(labels)
    labels.write_text("path,label,split\na.mp4,REAL,train\nb.mp4,FAKE,val\na.mp4,real,train\n")
    assert [v.path.rsplit("/", 1)[-1] for v in load_labelled_videos(labels)] == ["a.mp4", "b.mp4"]


def test_a_labels_csv_is_told_by_its_suffix_in_any_case(tmp_path):
    from jobs.training.evaluate import source_name

    labels = tmp_path / "labels.CSV"
    labels.write_text("path,label\na.mp4,REAL\n")
    assert [v.label for v in load_labelled_videos(labels)] == ["REAL"]
    assert source_name(labels) == "labels"
