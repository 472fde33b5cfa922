"""Labelled sets in their three layouts, and splits that never share an identity (jobs/training/datasets.py)."""

from __future__ import annotations

import json
from pathlib import Path

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


def _touch(root, *rels):
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_ffpp_identities_are_the_numbers_before_the_scene_so_a_split_holds_many_people(tmp_path):
    """FF++ swaps come in pairs (000_003 and 003_000); DeepFakeDetection's names carry the scene after "__", whose
    words ("exit", "room") once joined every actor into one group. Pinned: the groups, and seed 0's split of them."""
    yt, dfd = "original_sequences/youtube/c23/videos", "original_sequences/actors/c23/videos"
    fakes = "manipulated_sequences/{}/c23/videos"
    pairs = [("000", "003"), ("001", "004"), ("002", "005"), ("006", "007")]
    actors = [("01", "02"), ("03", "04"), ("05", "06")]
    _touch(tmp_path, *[f"{yt}/{i}.mp4" for pair in pairs for i in pair],
           *[f"{fakes.format('Deepfakes')}/{a}_{b}.mp4" for x, y in pairs for a, b in ((x, y), (y, x))],
           *[f"{dfd}/{i}__{scene}.mp4" for pair in actors for i in pair for scene in ("exit_phone_room", "podium_speech_happy")],
           *[f"{fakes.format('DeepFakeDetection')}/{a}_{b}__exit_phone_room__ABCDEFGH.mp4" for a, b in actors])
    videos = load_labelled_videos(tmp_path)
    people = {}
    for v in videos:
        people.setdefault(v.group, set()).update(v.identities)
    assert sorted(map(sorted, people.values())) == [["000", "003"], ["001", "004"], ["002", "005"], ["006", "007"],
                                                    ["01", "02"], ["03", "04"], ["05", "06"]]
    splits = split_by_group(videos, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    assert {name: sorted({v.group for v in members}) for name, members in splits.items()} == {
        "train": ["001", "01", "03", "05"], "val": ["006"], "test": ["000", "002"]}


@pytest.mark.parametrize("names, groups", [
    # UTKFace: age_gender_race_date, no person in it: each photo its own group
    (["10_1_0_20170109203608654.jpg", "10_1_0_20170109203642966.jpg", "26_0_1_20170116010114628.jpg",
      "1_0_0_20161219140623097.jpg"], 4),
    # Celeb-DF: a clip of id0, id0 swapped with id1, id2 in a clip numbered as id0's (numbers are no people);
    # YouTube-real's clips name nobody
    (["Celeb-real/id0_0000.mp4", "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-real/id1_0003.mp4",
      "Celeb-real/id2_0000.mp4", "YouTube-real/00000.mp4", "YouTube-real/00001.mp4"], 4),
    (["clip_001.mp4", "clip_002.mp4", "interview_a.mp4"], 3),  # words are no people
])
def test_only_a_known_datasets_names_give_identities_other_files_are_their_own_group(tmp_path, names, groups):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{n},{'FAKE' if 'synthesis' in n else 'REAL'}\n" for n in names))
    videos = load_labelled_videos(labels)
    assert len({v.group for v in videos}) == groups


def test_an_ids_column_is_read_as_given_and_one_group_holding_most_videos_is_warned_of(tmp_path, caplog):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,ids\n" + "".join(f"v{i}.mp4,REAL,actor_{i % 5}\n" for i in range(8)))
    with caplog.at_level("WARNING", logger="jobs.training.datasets"):
        videos = load_labelled_videos(labels)
        split_by_group(videos, {"train": 0.5, "val": 0.5})
    assert videos[0].identities == ["actor", "0"] and len({v.group for v in videos}) == 1
    assert "identity group 'actor' holds 8 of the 8 videos" in caplog.text
    caplog.clear()
    split_by_group(_ffpp_like(), {"train": 0.6, "val": 0.2, "test": 0.2})
    assert "identity group" not in caplog.text


def test_a_labels_csv_that_is_not_text_and_a_metadata_json_that_is_not_json_are_named(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match="not a UTF-8 labels CSV") as caught:
        load_labelled_videos(labels)
    assert str(labels) in str(caught.value)
    (tmp_path / "dfdc").mkdir()
    (tmp_path / "dfdc" / "metadata.json").write_text("{oops")
    with pytest.raises(ValueError, match="not JSON") as caught:
        load_labelled_videos(tmp_path / "dfdc")
    assert str(tmp_path / "dfdc" / "metadata.json") in str(caught.value)


@pytest.mark.parametrize("split", ["val", "test"])
def test_the_shipped_detectors_ffpp_splits_stay_as_its_reports_give_them(ffpp_dir, split):
    """The shipped reports list every FF++ video of their split (all were scored): reading the labels must keep
    each video in its split, or the held-out numbers would be measured on trained-on people."""
    from jobs.training.evaluate import select_videos

    report = json.loads((Path(__file__).parents[3] / "docs" / "reports" / f"report-{split}.json").read_text())
    shipped = sorted(Path(r["path"]).relative_to(Path(r["path"]).parents[1]) for r in report["per_video"]
                     if r["source"] == "ffpp-c23")
    assert len(shipped) == {"val": 19, "test": 28}[split]
    assert sorted(Path(v.path).relative_to(ffpp_dir) for v in select_videos(ffpp_dir, split)) == shipped
