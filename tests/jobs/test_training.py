"""prepare / self-blending / train / evaluate on tiny datasets the tests make themselves.

Long on purpose: the steps share the datasets and the trained checkpoint the module makes once."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn import metrics as skm

from jobs.training.datasets import LabelledVideo, assign_identity_groups, load_labelled_videos, split_by_group
from jobs.training.evaluate import fit_on_validation, report
from jobs.training.metrics import balanced_weights, binary_metrics, calibration, threshold_for_fpr, tpr_at_fpr
from jobs.training.prepare import CROP_SCHEMA, decode_png, encode_png, load_crop_table, prepare, write_table
from jobs.training.augment import augment, capture, codec_roundtrip, h264
from jobs.training.sbi import face_mask, self_blend
from jobs.training.xblend import cross_blend, normalised, pick_donor
from jobs.training.train import CropSet, TrainConfig, _rows, fit, item_weights, paired_order
from pipeline.config import load_settings

# ------------------------------------------------------------------------------------------ datasets


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

# ------------------------------------------------------------------------------------- self-blending


@pytest.fixture(scope="module")
def astronaut_face(samples_dir):
    """The bundled astronaut photo's face crop with MTCNN's box and landmarks in crop coordinates."""
    from pipeline.config import DecodeConfig, DetectConfig
    from pipeline.crop import crop_face
    from pipeline.decode import decode_bytes
    from pipeline.detect import FaceDetector

    frame = decode_bytes((samples_dir / "astronaut.jpg").read_bytes(), DecodeConfig()).frames[0]
    (boxes, _, landmarks), = FaceDetector(DetectConfig(), "cpu").detect(frame[None])
    crop, transform = crop_face(frame, boxes[0], 160, 0.3)
    box = transform.apply(boxes[0].reshape(2, 2)).reshape(4)
    return crop, box, transform.apply(landmarks[0])


def test_self_blend_mask_lies_on_the_face(astronaut_face):
    crop, box, landmarks = astronaut_face
    x1, y1, x2, y2 = box
    for seed in range(20):
        mask = face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(seed))
        ys, xs = np.nonzero(mask > 0.5)
        assert len(xs) > 0.15 * (x2 - x1) * (y2 - y1)             # covers a good part of the face
        cx, cy = np.average(np.indices(mask.shape)[::-1].reshape(2, -1), axis=1, weights=mask.reshape(-1))
        assert x1 < cx < x2 and y1 < cy < y2                        # centred on the face
        w, h = x2 - x1, y2 - y1
        inside = mask[int(max(0, y1 - 0.2 * h)):int(y2 + 0.2 * h), int(max(0, x1 - 0.2 * w)):int(x2 + 0.2 * w)].sum()
        assert inside / mask.sum() > 0.95                           # and hardly anything off it


def _mesh_points(crop, box):
    from jobs.training.mesh import FaceMesh

    points, score = FaceMesh()(crop, box)
    eyes = np.stack([(points[33] + points[133]) / 2, (points[362] + points[263]) / 2])  # corners of each eye
    return points, score, eyes, points[[61, 291]]  # mouth corners


def test_face_mesh_lands_on_the_astronaut_where_mtcnn_does(astronaut_face):
    """The shipped network and our ROI/normalisation: its eyes and mouth corners are MTCNN's, within a tenth of the
    face; with a box a third too big and off-centre (as on UTKFace's full-bleed chips), two passes still get there."""
    from jobs.training.mesh import OUTLINE, outlines

    crop, box, landmarks = astronaut_face
    width = box[2] - box[0]
    points, score, eyes, mouth = _mesh_points(crop, box)
    assert points.shape == (468, 2) and score > 0.9
    assert np.linalg.norm(np.sort(eyes, 0) - np.sort(landmarks[:2], 0), axis=1).max() < 0.1 * width
    assert np.linalg.norm(np.sort(mouth, 0) - np.sort(landmarks[3:], 0), axis=1).max() < 0.1 * width
    good = outlines([crop], [box])[0]
    wrong = box + np.array([-0.3, -0.35, 0.1, 0.15]) * width
    off = outlines([crop], [wrong])[0]
    assert good.shape == (len(OUTLINE), 2)
    assert np.abs(off - good).max() < 0.06 * width  # one pass alone: 0.12
    x1, y1, x2, y2 = box
    assert x1 - 0.3 * width < good[:, 0].min() and good[:, 0].max() < x2 + 0.3 * width  # the oval hugs MTCNN's box


def test_outline_mask_follows_the_face_oval_with_or_without_the_forehead(astronaut_face):
    import cv2

    from jobs.training.mesh import OVAL, outlines

    crop, box, landmarks = astronaut_face
    outline = outlines([crop], [box])[0]
    oval = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(outline[:len(OVAL)]).astype(np.int32)], 1)
    forehead = tuple(np.round(outline[0]).astype(int) + [0, 4])  # just inside the oval's top
    tops = []
    for seed in range(20):
        mask = face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(seed), outline)
        assert mask.max() == pytest.approx(1.0)
        assert (mask > 0.5)[oval == 1].mean() > 0.4                  # covers much of the face
        grown = cv2.dilate(oval, np.ones((25, 25), np.uint8))
        assert mask[grown == 1].sum() / mask.sum() > 0.97              # and hardly anything off it
        tops.append(mask[forehead[1], forehead[0]])
    assert min(tops) < 0.2 and max(tops) > 0.5                       # brows-to-jaw masks and whole-oval ones
    assert not np.array_equal(face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(0), outline),
                              face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(0)))


def test_outline_masks_only_when_asked_and_outlines_only_of_reals(tmp_path, monkeypatch):
    import jobs.training.train as train_module

    rows = _rows(_toy_dataset(tmp_path / "toy"), "train", 48)
    seen = []
    real_blend = train_module.self_blend
    monkeypatch.setattr(train_module, "self_blend", lambda *a: seen.append(a[4] is not None) or real_blend(*a))
    off = CropSet(rows, sbi=True, real_fakes=True, seed=0)
    assert off.outlines == {}
    for i in range(len(off)):
        off[i]
    assert seen and not any(seen)
    on = CropSet(rows, sbi=True, real_fakes=True, seed=0, mesh_p=1.0)
    assert sorted(on.outlines) == [i for i, r in enumerate(rows) if r["label"] == "REAL"]
    seen.clear()
    for i in range(len(on)):
        on[i]
    assert seen and all(seen)
    half = CropSet(rows, sbi=True, real_fakes=True, seed=0, mesh_p=0.5)
    seen.clear()
    for i in range(len(half)):
        half[i]
    assert 0 < sum(seen) < len(seen)


def test_self_blend_changes_only_the_masked_face(astronaut_face):
    crop, box, landmarks = astronaut_face
    fake, mask = self_blend(crop, box, landmarks, np.random.default_rng(5))
    diff = np.abs(fake.astype(int) - crop.astype(int)).sum(-1)
    assert diff[mask > 0.05].mean() > 2                              # the face changed
    assert diff[mask == 0].max() <= 1                                # outside the mask: the real pixels
    again, _ = self_blend(crop, box, landmarks, np.random.default_rng(5))
    assert np.array_equal(fake, again)                               # seeded: reproducible

def _shifted(image, landmarks, dx, dy):
    import cv2
    moved = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    return moved, landmarks + np.float32([dx, dy])


def test_cross_blend_aligns_the_donor_by_its_landmarks(astronaut_face):
    crop, box, landmarks = astronaut_face
    donor, donor_landmarks = _shifted(crop, landmarks, 17, -11)           # the same face elsewhere in its crop
    aligned, mask = cross_blend(crop, box, landmarks, donor, donor_landmarks, np.random.default_rng(3))
    misaligned, _ = cross_blend(crop, box, landmarks, donor, landmarks, np.random.default_rng(3))
    inside = mask > 0.5
    err = lambda x: np.abs(x.astype(int) - crop.astype(int)).sum(-1)[inside].mean()  # noqa: E731
    assert err(aligned) < 0.3 * err(misaligned)                        # warped back onto the face it covers
    assert np.abs(aligned.astype(int) - crop.astype(int)).sum(-1)[mask == 0].max() <= 1  # outside: the real pixels
    again, _ = cross_blend(crop, box, landmarks, donor, donor_landmarks, np.random.default_rng(3))
    assert np.array_equal(aligned, again)                              # seeded


def test_cross_blend_never_pastes_a_donor_s_zero_padding(astronaut_face):
    crop, box, landmarks = astronaut_face
    donor = crop.copy()
    donor[:, : crop.shape[1] // 2] = 0                                 # a face cut off by its frame edge
    for seed in range(5):
        fake, mask = cross_blend(crop, box, landmarks, donor, landmarks, np.random.default_rng(seed))
        left = np.zeros(mask.shape, bool)
        left[:, : crop.shape[1] // 2 - 8] = True
        assert mask[left].max() < 0.05
        assert np.abs(fake.astype(int) - crop.astype(int)).sum(-1)[left].max() <= 15


def test_pick_donor_takes_the_closest_allowed_pose():
    base = np.float32([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]])
    poses = normalised(np.stack([base, base * 2 + 5, base + [[0, 0], [0, 0], [25, 0], [0, 0], [0, 0]], base[::-1]]))
    assert np.allclose(poses[0], poses[1])                              # scale and shift do not count
    allowed = np.array([False, True, True, True])
    assert all(pick_donor(poses[0], poses, allowed, np.random.default_rng(s)) == 1 for s in range(5))
    assert pick_donor(poses[0], poses, np.array([False, False, True, True]), np.random.default_rng(0)) == 2
    assert pick_donor(poses[0], poses, np.zeros(4, bool), np.random.default_rng(0)) is None


def test_h264_round_trip_leaves_codec_traces_like_a_video_frame(astronaut_face):
    crop = astronaut_face[0]
    light, heavy = h264(crop, 20), h264(crop, 36)
    assert light.shape == heavy.shape == crop.shape and light.dtype == np.uint8
    err = lambda x: np.abs(x.astype(int) - crop.astype(int)).mean()  # noqa: E731
    assert 0.3 < err(light) < err(heavy) < 20                         # lossy, more so at a higher QP
    # 8x8 block grid: H.264 (like every block codec) makes pixel steps across block edges stronger
    step = np.abs(np.diff(heavy.astype(int), axis=1)).mean(axis=(0, 2))
    assert step[7::8].mean() > step[np.arange(len(step)) % 8 != 7].mean()
    assert np.array_equal(h264(crop, 28), h264(crop, 28))             # cached encoders carry no state


def test_codec_path_is_seeded_and_label_independent(astronaut_face):
    crop, box, landmarks = astronaut_face
    fake, _ = self_blend(crop, box, landmarks, np.random.default_rng(1))
    for image in (crop, fake):  # the same path for a real and a blended face: "was it a video" says nothing
        a, b = codec_roundtrip(image, np.random.default_rng(3)), codec_roundtrip(image, np.random.default_rng(3))
        assert np.array_equal(a, b) and a.shape == image.shape and not np.array_equal(a, image)
    always = augment(crop, np.random.default_rng(0), codec_p=1.0)
    never = augment(crop, np.random.default_rng(0), codec_p=0.0)
    assert always.shape == never.shape == crop.shape and not np.array_equal(always, never)

def test_capture_adds_grain_or_softness_to_the_whole_image(astronaut_face):
    crop = astronaut_face[0]
    detail = lambda x: np.abs(np.diff(x.astype(int), axis=1)).mean()  # noqa: E731 - pixel-to-pixel steps
    outs = [capture(crop, np.random.default_rng(seed)) for seed in range(12)]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs)
    assert any(detail(o) > detail(crop) * 1.2 for o in outs)   # grain
    assert any(detail(o) < detail(crop) * 0.8 for o in outs)   # a soft lens
    assert np.array_equal(capture(crop, np.random.default_rng(5)), capture(crop, np.random.default_rng(5)))


def test_capture_comes_before_the_blend_for_any_label_and_only_when_asked(tmp_path, monkeypatch):
    import jobs.training.train as train_module

    rows = _rows(_toy_dataset(tmp_path / "toy"), "train", 48)
    calls = []
    real_capture, real_blend = train_module.capture, train_module.self_blend
    monkeypatch.setattr(train_module, "capture", lambda image, rng: calls.append("capture") or real_capture(image, rng))
    monkeypatch.setattr(train_module, "self_blend", lambda *a: calls.append("blend") or real_blend(*a))
    off = CropSet(rows, sbi=True, real_fakes=True, seed=0)
    for i in range(len(off)):
        off[i]
    assert "capture" not in calls and "blend" in calls
    on = CropSet(rows, sbi=True, real_fakes=True, seed=0, capture_p=1.0)
    for i, (row, blend, label) in enumerate(on.items):
        calls.clear()
        on[i]
        assert calls == (["capture", "blend"] if blend else ["capture"]), (label, calls)


def test_erase_part_blacks_out_one_landmark_region_and_nothing_else():
    from jobs.training.augment import erase_part

    crop = np.full((96, 96, 3), 200, np.uint8)
    points = np.array([[30, 35], [66, 35], [48, 52], [34, 70], [62, 70]], np.float32)  # eyes, nose, mouth corners
    hit = {"eyes": 0, "nose": 0, "mouth": 0}
    for seed in range(30):
        out = erase_part(crop, points, np.random.default_rng(seed))
        assert out.shape == crop.shape and out.dtype == np.uint8 and crop.min() == 200  # the input is untouched
        black = out.max(axis=2) == 0
        assert black.any() and np.all(out[~black] == 200)  # erased pixels are black, the rest as it was
        for name, (y, x) in {"eyes": (35, 48), "nose": (52, 48), "mouth": (70, 48)}.items():
            hit[name] += bool(black[y, x])
        assert sum(black[y, x] for y, x in [(35, 48), (52, 48), (70, 48)]) == 1  # one part at a time
        assert not black[5, 5] and not black[90, 90]  # never the background or the chin's edge
    assert all(hit.values()), hit


def test_parts_erased_after_the_blend_for_any_label_and_only_when_asked(tmp_path, monkeypatch):
    import jobs.training.train as train_module

    rows = _rows(_toy_dataset(tmp_path / "toy"), "train", 48)
    calls = []
    real_erase, real_blend = train_module.erase_part, train_module.self_blend
    monkeypatch.setattr(train_module, "erase_part", lambda *a: calls.append("erase") or real_erase(*a))
    monkeypatch.setattr(train_module, "self_blend", lambda *a: calls.append("blend") or real_blend(*a))
    off = CropSet(rows, sbi=True, real_fakes=True, seed=0)
    for i in range(len(off)):
        off[i]
    assert "erase" not in calls and "blend" in calls
    on = CropSet(rows, sbi=True, real_fakes=True, seed=0, parts_p=1.0)
    labels = set()
    for i, (row, blend, label) in enumerate(on.items):
        calls.clear()
        on[i]
        assert calls == (["blend", "erase"] if blend else ["erase"]), (label, calls)
        labels.add(label)
    assert labels == {0, 1}


# --------------------------------------------------------------------------------------------- metrics


def test_metrics_match_scikit_learn():
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 0, 1, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.6, 0.2, 0.55, 0.05])
    m = binary_metrics(labels, scores, 0.5)
    predicted = (scores >= 0.5).astype(int)
    assert m["f1"] == pytest.approx(skm.f1_score(labels, predicted))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, predicted))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, predicted))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert m["log_loss"] == pytest.approx(skm.log_loss(labels, scores))
    assert m["confusion"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 4}
    assert binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)["roc_auc"] is None


def _records(prefix: str, source: str, label: str, scores, frames: int = 1) -> list[dict]:
    return [{"path": f"{prefix}{i}", "label": label, "method": "original" if label == "REAL" else "X", "source": source,
             "error": "", "frames_sampled": frames, "face_scores": [s], "face_track": [0]} for i, s in enumerate(scores)]


def test_operating_point_keeps_every_real_source_within_the_target_fpr():
    photos = _records("p", "photos", "REAL", np.linspace(0.01, 0.20, 20))        # many easy reals
    videos = _records("v", "videos", "REAL", [0.30, 0.35, 0.40, 0.45, 0.50])     # few hard reals
    fakes = _records("f", "videos", "FAKE", [0.45, 0.6, 0.7, 0.8, 0.9])
    strategy, threshold, comparison = fit_on_validation(photos + videos + fakes, target_fpr=0.05)
    per_source = comparison[strategy]["per_source_threshold"]
    # 20 photos at 5%: one may be called FAKE → just above the 19th; 5 videos at 5%: none → just above the top
    # (at the card's precision: the next number of 6 decimals)
    assert per_source["photos"] == pytest.approx(0.190001, abs=1e-9)
    assert threshold == per_source["videos"] == pytest.approx(0.500001, abs=1e-9)
    # the pooled 5% quantile (what the photos alone would allow) would have called 4 real videos FAKE
    assert np.quantile([r["face_scores"][0] for r in photos + videos], 0.95) < 0.5
    assert comparison[strategy]["fpr"] == 0.0
    # a test split is reported at the validation threshold, untouched, with FPR per real source
    test = _records("tp", "photos", "REAL", [0.1, 0.6]) + _records("tf", "videos", "FAKE", [0.55, 0.4])
    result = report(test, threshold, strategy)
    assert result["threshold"] == threshold and result["real_sources"]["photos"]["fpr"] == 0.5
    assert result["overall"]["confusion"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}


def test_aggregation_is_chosen_by_auc_with_the_min_track_rule():
    # one real video whose long main track is clean but a 2-frame side track looks fake: track_max would
    # call it FAKE; with the minimum-track rule (4 frames) the side track gives no verdict
    def video(path, label, main, side=None):
        scores, tracks = [main] * 8, [0] * 8
        if side is not None:
            scores, tracks = scores + [side] * 2, tracks + [1] * 2
        return {"path": path, "label": label, "method": "X", "source": "v", "error": "", "frames_sampled": 8,
                "face_scores": scores, "face_track": tracks}

    records = [video("r1", "REAL", 0.2, side=0.95), video("r2", "REAL", 0.3), video("f1", "FAKE", 0.7), video("f2", "FAKE", 0.8)]
    _, _, without_rule = fit_on_validation(records, 0.05, min_track_frames=1)
    assert without_rule["track_max"]["roc_auc"] < 1.0
    strategy, threshold, with_rule = fit_on_validation(records, 0.05, min_track_frames=4)
    assert with_rule["track_max"]["roc_auc"] == 1.0 and with_rule[strategy]["roc_auc"] == 1.0
    assert 0.3 < threshold < 0.7


def test_tpr_at_fpr_and_calibration_on_hand_made_scores():
    labels = np.array([0] * 10 + [1] * 10)
    scores = np.concatenate([np.arange(10) / 10, [0.95] * 5 + [0.5] * 5])
    assert tpr_at_fpr(labels, scores, (0.0, 0.1, 0.5)) == {"tpr_at_fpr_0": 0.5, "tpr_at_fpr_0.1": 0.5, "tpr_at_fpr_0.5": 1.0}
    # all scores 0.25 while half are fakes: off by 0.25 everywhere
    assert calibration(np.array([0, 1] * 5), np.full(10, 0.25))["ece"] == pytest.approx(0.25)
    # scores that equal the fake share of their bin are perfectly calibrated
    cal = calibration(np.array([0, 0, 0, 1] + [1, 1, 1, 0]), np.array([0.25] * 4 + [0.75] * 4))
    assert cal["ece"] == pytest.approx(0.0) and [b["n"] for b in cal["bins"]] == [4, 4]
    assert threshold_for_fpr(np.array([0.1, 0.2, 0.3]), 0.5) > 0.2  # 1 of 3 may pass


@pytest.mark.parametrize("highest_real", [0.5539214527234436, 0.5539206, 0.553921, 0.1 + 0.2, 0.9999996])
def test_threshold_at_card_precision_still_clears_the_highest_real(highest_real):
    # v22's fit rounded 0.55392145 to nearest (0.553921) and so called its highest validation real FAKE
    reals = np.array([0.05, 0.1, highest_real])
    threshold = threshold_for_fpr(reals, 0.05)
    assert threshold > highest_real and threshold == round(threshold, 6)
    assert threshold - highest_real <= 1.0000001e-6  # the smallest such number, not a looser one
    assert not (reals >= threshold).any()


def test_balanced_weights_give_each_real_source_equal_say():
    labels = np.array([0] * 100 + [0] * 2 + [1] * 4)
    sources = ["photos"] * 100 + ["videos"] * 2 + ["videos"] * 4
    w = balanced_weights(labels, sources)
    assert w[:100].sum() == pytest.approx(0.5) and w[100:102].sum() == pytest.approx(0.5) and w[102:].sum() == pytest.approx(1)

# ------------------------------------------------------------------------------------------- training


def _toy_dataset(root: Path, size: int = 32, per_class: int = 24, margin: float = 0.2) -> Path:
    """Separable toy crops: reals are smooth gradients, fakes carry strong pixel noise."""
    rng = np.random.default_rng(0)
    for split, videos in {"train": 4, "val": 2}.items():
        for v in range(videos):
            rows = []
            label = "REAL" if v % 2 == 0 else "FAKE"
            for i in range(per_class // videos * 2):
                base = np.linspace(0, 255, size)[None, :, None] * rng.uniform(0.3, 1.0, 3)
                img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
                if label == "FAKE":
                    img = img + rng.normal(0, 40, img.shape)
                crop = np.clip(img, 0, 255).astype(np.uint8)
                rows.append({"video": f"{split}{v}", "label": label, "method": "toy", "group": f"{split}{v}", "split": split,
                             "frame": i, "timestamp": 0.0, "track": 0, "det_prob": 1.0, "box": [8.0, 8.0, 24.0, 24.0],
                             "landmarks": [12, 12, 20, 12, 16, 16, 13, 20, 19, 20], "crop_png": encode_png(crop)})
            write_table(pa.Table.from_pylist(rows, schema=CROP_SCHEMA), root / "crops" / split / f"{split}{v}.parquet")
    (root / "manifest.json").write_text(json.dumps({"crop_size": size, "margin": margin, "source": "toy", "splits": {}}))
    return root


def _toy_config(tmp_path: Path, epochs: int = 3, **extra) -> TrainConfig:
    data = _toy_dataset(tmp_path / "toy")
    return TrainConfig(dataset=data, out_dir=tmp_path / "run", epochs=epochs, batch_size=8, lr=2e-3, sbi=False, real_fakes=True,
                       imagenet=False, patience=5, seed=1, codec_p=0.0, **extra)  # toy fakes are pixel noise: a codec would erase the cue


def test_tiny_model_loss_falls_and_writes_checkpoints(tmp_path):
    state = fit(_toy_config(tmp_path))
    losses = [h["train_loss"] for h in state["history"]]
    assert losses[-1] < losses[0] * 0.7
    assert state["history"][-1]["val_video_auc"] == 1.0
    from pipeline.checkpoint import load_checkpoint

    model, card = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert card.architecture.input_size == 32 and card.training["best_epoch"] >= 1
    assert card.architecture.crop_margin == 0.2  # the crops' margin rides in the card, for inference to repeat
    assert (tmp_path / "run" / "last.pt").exists()


def test_init_starts_from_a_trained_detector_and_refuses_another_geometry(tmp_path):
    import hashlib

    from jobs.training.train import build_model
    from pipeline.checkpoint import load_checkpoint
    from pipeline.errors import CheckpointError

    fit(_toy_config(tmp_path, epochs=2))
    start = tmp_path / "run" / "best.safetensors"
    trained, _ = load_checkpoint(start)
    config = _toy_config(tmp_path / "ft", epochs=1, init=start)
    built = build_model(config, 32, 0.2)  # every tensor the checkpoint's, the head's too (not a seeded fresh one)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in built.state_dict().items())
    assert not torch.equal(build_model(_toy_config(tmp_path / "plain", epochs=1), 32, 0.2).head[0].weight, built.head[0].weight)
    with pytest.raises(ValueError, match="does not point to a file"):  # pydantic's, before any crop is read
        _toy_config(tmp_path / "none", init=tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="this run builds"):
        build_model(config, 48, 0.2)  # crops of another size: the checkpoint is not this run's network
    state = fit(config)  # one epoch fine-tuning from it keeps the toy task solved from the first validation
    assert state["history"][0]["val_video_auc"] == 1.0
    _, card = load_checkpoint(tmp_path / "ft" / "run" / "best.safetensors")
    assert card.training["init"] == {"version": "dev", "sha256": hashlib.sha256(start.read_bytes()).hexdigest()}


def test_drop_path_skips_blocks_in_training_only_and_adds_no_weights(tmp_path):
    from jobs.training.train import build_model

    config = _toy_config(tmp_path, epochs=1, drop_path=0.5)
    model, plain = build_model(config, 32, 0.2), build_model(config.model_copy(update={"drop_path": 0.0}), 32, 0.2)
    assert model.state_dict().keys() == plain.state_dict().keys()  # the card's network: checkpoints load either way
    def rates(net):
        return [getattr(b.drop_path, "drop_prob", 0.0) for stage in net.encoder.blocks for b in stage]

    skip = rates(model)
    assert skip[-1] == pytest.approx(0.5 * (len(skip) - 1) / len(skip)) and skip == sorted(skip)
    assert not any(rates(plain))
    plain.load_state_dict(model.state_dict())
    x = torch.rand(4, 3, 32, 32) * 255
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))  # identity at inference
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, model(x))  # random in training


def test_layer_decay_slows_the_encoder_s_lower_layers_and_only_when_asked(tmp_path):
    from jobs.training.train import build_model, build_optimizer

    config = _toy_config(tmp_path, epochs=1, layer_decay=0.8)
    model = build_model(config, 32, 0.2)
    assert len(build_optimizer(model, config.model_copy(update={"layer_decay": 0.0})).param_groups) == 1
    groups = build_optimizer(model, config).param_groups
    owner = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(owner) == sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # each once
    lr = dict((name, owner[id(p)]) for name, p in model.named_parameters())
    assert lr["head.0.weight"] == lr["encoder.conv_head.weight"] == config.lr
    assert lr["encoder.conv_stem.weight"] == pytest.approx(config.lr * 0.8 ** 16)  # 16 layers below the top
    assert lr["encoder.conv_stem.weight"] < lr["encoder.blocks.3.0.conv_pw.weight"] < lr["encoder.conv_head.weight"]
    # a real run: the scheduler drives every group, and the stem moves far less than the top
    start = {k: v.clone() for k, v in model.state_dict().items()}
    fit(config)
    trained = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    moved = {k: float((trained[k].float() - start[k].float()).abs().mean()) for k in ("encoder.conv_stem.weight", "encoder.conv_head.weight")}
    assert 0 < moved["encoder.conv_stem.weight"] < 0.25 * moved["encoder.conv_head.weight"]


def test_datasets_cropped_differently_are_refused(tmp_path):
    from jobs.training.train import crop_geometry

    a, b = _toy_dataset(tmp_path / "a", per_class=4), _toy_dataset(tmp_path / "b", per_class=4, margin=0.3)
    assert crop_geometry([a, a]) == (32, 0.2)
    with pytest.raises(ValueError, match="differ in"):
        crop_geometry([a, b])


def test_paired_draw_puts_each_real_beside_its_pseudo_fake_and_keeps_the_shares(tmp_path):
    data = _toy_dataset(tmp_path / "toy")
    rows = _rows(data, "train", 48)
    # a second real source, four times the first's reals: sqrt balancing must hold it to twice their draws
    rows += [dict(r, source="more", video=f"more{k}{r['video']}") for k in range(4) for r in rows if r["label"] == "REAL"]
    crops = CropSet(rows, sbi=True, real_fakes=True, seed=0)
    weights = item_weights(crops, "sqrt")
    batch, draws, counts = 8, 400, torch.zeros(len(crops.items), dtype=torch.float64)
    for epoch in range(draws):
        order = paired_order(crops, weights, 40, torch.Generator().manual_seed(epoch))
        assert len(order) == len(set(order)) == 40
        for start in range(0, 40, batch):  # every real crop drawn sits in the same batch as its pseudo-fake
            chunk = [crops.items[i] for i in order[start:start + batch]]
            for row, blend, _ in chunk:
                if crops.donors[row]:  # a real crop
                    assert (row, not blend, int(not blend)) in chunk
        counts[order] += 1
    # each item is drawn about as often as an unpaired weighted draw would draw it
    unpaired = torch.zeros_like(counts)
    for epoch in range(draws):
        unpaired[torch.multinomial(weights, 40, replacement=False, generator=torch.Generator().manual_seed(epoch))] += 1
    for source in ("toy", "more"):
        mask = torch.tensor([crops.sources[row] == source for row, _, _ in crops.items])
        assert float(counts[mask].sum()) == pytest.approx(float(unpaired[mask].sum()), rel=0.1)
    labels = torch.tensor([label for _, _, label in crops.items])
    assert float(counts[labels == 1].sum()) == pytest.approx(float(unpaired[labels == 1].sum()), rel=0.1)


def test_resumed_run_continues_exactly(tmp_path):
    full = fit(_toy_config(tmp_path / "a", epochs=2))
    interrupted = _toy_config(tmp_path / "c", epochs=2)
    fit_stop_after_one(interrupted)
    resumed = fit(interrupted.model_copy(update={"resume": True}))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=False)["model"]
    c = torch.load(tmp_path / "c" / "run" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k].float(), c[k].float(), atol=1e-5) for k in a)
    assert resumed["history"][-1]["train_loss"] == pytest.approx(full["history"][-1]["train_loss"], rel=1e-4)


def fit_stop_after_one(config: TrainConfig) -> None:
    """Simulate a crash after epoch 1 of a 2-epoch run: run it, then roll last.pt back to epoch 1."""
    import jobs.training.train as train_module

    original = train_module.validate
    calls = {"n": 0}

    def crash_after_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash in epoch 2")
        return original(*args, **kwargs)

    train_module.validate = crash_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(config)
    finally:
        train_module.validate = original
    saved = torch.load(Path(config.out_dir) / "last.pt", weights_only=False)
    assert saved["state"]["epoch"] == 1


# A hang here sits in Ray's wait, out of reach of the signal the default method sends (2026-12-05: past 10 min);
# the thread method dumps every stack and ends the run, so CI fails in minutes with the cause, not at its limit
@pytest.mark.timeout(300, method="thread")
@pytest.mark.slow
def test_ray_train_two_cpu_workers(tmp_path, ray_session):
    import gc

    from jobs.training.train import train

    # Ray Train needs both CPUs of the shared test instance. An earlier scan's actor pool is released when
    # its executor is collected; until then its actors hold their CPU shares and Ray Train would wait for
    # them forever (a fresh-clone run hung here, 2026-12-03). Collect, wait a bounded time, fail clearly.
    gc.collect()
    deadline = time.monotonic() + 60
    while ray_session.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        gc.collect()
        time.sleep(1)
    assert ray_session.available_resources().get("CPU", 0) >= 2, ray_session.available_resources()
    # with the blend-map head: a second module that the workers must wrap and keep in step like the detector
    config = _toy_config(tmp_path, epochs=2, num_workers=2, blend_map=1.0).model_copy(update={"sbi": True})
    result = train(config)
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert all(h["train_map_loss"] > 0 for h in result["history"])
    assert (tmp_path / "run" / "best.safetensors").exists()
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["blend_map_head"]  # rank 0 saved the head

# -------------------------------------------------------------------------------------------- prepare


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


def test_evaluate_leaves_the_card_alone_unless_asked(tmp_path, samples_dir, caplog):
    from jobs.training.evaluate import evaluate
    from pipeline.card import card_path
    from pipeline.checkpoint import imagenet_init_checkpoint

    ckpt = imagenet_init_checkpoint(tmp_path / "m.safetensors", "t", "test")
    before = card_path(ckpt).read_text()
    (tmp_path / "labels.csv").write_text(f"path,label,group\n{samples_dir / 'astronaut.jpg'},REAL,a\n"
                                         f"{samples_dir / 'astronauts_pair.jpg'},FAKE,b\n")
    settings = load_settings(**{"classify.checkpoint": str(ckpt)})
    evaluate(tmp_path / "labels.csv", "all", settings, tmp_path / "eval")
    assert card_path(ckpt).read_text() == before
    assert "model card" not in caplog.text
    evaluate(tmp_path / "labels.csv", "all", settings, tmp_path / "eval", record=True)
    summary = json.loads(card_path(ckpt).read_text())["metrics"]["all_report"]
    assert summary["roc_auc_ci95"] is not None  # each AUC with its interval
    assert set(summary["per_method_auc_ci95"]) == set(summary["per_method_auc"])
    assert ("own_sources_auc_ci95" in summary) == ("own_sources_auc" in summary)
    assert f"model card {card_path(ckpt)}: all report's summary written" in caplog.text  # a card write is never silent


def test_resume_refuses_other_settings_with_a_code(tmp_path):
    from jobs.training.train import ResumeMismatchError

    interrupted = _toy_config(tmp_path, epochs=2)
    fit_stop_after_one(interrupted)
    saved = (tmp_path / "run" / "last.pt").read_bytes()
    for change in ({"layer_decay": 0.8}, {"ema_decay": 0.9}, {"epochs": 3}, {"lr": 1e-3}):
        with pytest.raises(ResumeMismatchError) as caught:
            fit(interrupted.model_copy(update={"resume": True, **change}))
        assert caught.value.code == "resume_mismatch" and next(iter(change)) in str(caught.value)
        assert (tmp_path / "run" / "last.pt").read_bytes() == saved  # nothing trained, nothing overwritten
    resumed = fit(interrupted.model_copy(update={"resume": True, "threads": 1, "patience": 4, "version": "v2"}))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]  # how this machine runs it may change


def test_resume_of_a_run_older_than_a_setting_holds_it_to_its_default(tmp_path):
    """A last.pt saved before a setting existed ran with its default (new options keep the old behaviour):
    resuming with another value is refused, with the default it goes on."""
    from jobs.training.train import ResumeMismatchError

    interrupted = _toy_config(tmp_path, epochs=2)
    fit_stop_after_one(interrupted)
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=False)
    del state["config"]["parts_p"]  # as if saved before --parts-p existed
    torch.save(state, last)
    with pytest.raises(ResumeMismatchError, match="parts_p=0.0"):
        fit(interrupted.model_copy(update={"resume": True, "parts_p": 0.3}))
    resumed = fit(interrupted.model_copy(update={"resume": True}))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_ema_weights_are_validated_shipped_and_resumed(tmp_path):
    from safetensors.torch import load_file

    full = fit(_toy_config(tmp_path / "a", epochs=2, ema_decay=0.9))
    interrupted = _toy_config(tmp_path / "c", epochs=2, ema_decay=0.9)
    fit_stop_after_one(interrupted)
    after_one = torch.load(tmp_path / "c" / "run" / "last.pt", weights_only=False)
    ema = {k.removeprefix("module."): v for k, v in after_one["ema"].items() if k.startswith("module.")}
    raw = after_one["model"]
    shipped = load_file(tmp_path / "c" / "run" / "best.safetensors")  # epoch 1 was the best so far
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.allclose(raw[k], ema[k], atol=1e-3)]
    assert moved, "the average should lag the raw weights"
    for k in moved:  # the shipped weights are the average's, not the raw model's
        assert torch.allclose(shipped[k].float(), ema[k].float(), atol=2e-3, rtol=2e-3)
    resumed = fit(interrupted.model_copy(update={"resume": True}))
    a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=False)["ema"]
    c = torch.load(tmp_path / "c" / "run" / "last.pt", weights_only=False)["ema"]
    assert all(torch.allclose(a[k].float(), c[k].float(), atol=1e-5) for k in a)
    assert resumed["history"][-1]["val_video_auc"] == full["history"][-1]["val_video_auc"]


def test_auc_interval_brackets_the_auc_and_narrows_with_more_objects():
    from jobs.training.metrics import auc_interval

    rng = np.random.default_rng(3)
    def sample(n):  # overlapping classes: AUC about 0.76
        return np.r_[np.zeros(n), np.ones(n)].astype(int), np.r_[rng.normal(0, 1, n), rng.normal(1, 1, n)]
    small, large = sample(20), sample(2000)
    lo, hi = auc_interval(*small)
    auc = skm.roc_auc_score(*small)
    assert lo < auc < hi and 0.15 < hi - lo < 0.5
    lo2, hi2 = auc_interval(*large)
    assert lo2 < skm.roc_auc_score(*large) < hi2 and hi2 - lo2 < 0.05  # shrinks like 1/sqrt(n)
    labels, scores = small
    assert auc_interval(labels, scores) == auc_interval(labels, scores)  # seeded: a report reproduces
    assert auc_interval(np.ones(5, int), np.arange(5.0)) is None  # one class: undefined, not 0.5
    tied = auc_interval(np.array([0, 0, 1, 1]), np.full(4, 0.5))
    assert tied == [0.5, 0.5]  # ties count half, as in roc_auc_score


# ------------------------------------------------------------------------------------------ blend map


def test_blend_map_head_reads_the_stride_16_grid_of_the_latest_forward():
    import copy

    from jobs.training.blendmap import BlendMapHead
    from pipeline.card import ModelSpec
    from pipeline.model import DeepfakeDetector

    model = DeepfakeDetector(ModelSpec(input_size=64))
    head = BlendMapHead(model.encoder)
    with pytest.raises(RuntimeError, match="first"):
        head()
    model(torch.rand(3, 3, 64, 64) * 255)
    assert head().shape == (3, 1, 4, 4)
    ema = copy.deepcopy(model)  # an EMA copy keeps the hook but brings no copy of the head's weights
    assert sum(p.numel() for p in ema.parameters()) == sum(p.numel() for p in model.parameters())
    ema(torch.rand(2, 3, 64, 64) * 255)
    assert head().shape == (2, 1, 4, 4)
    head.remove()
    model(torch.rand(1, 3, 64, 64) * 255)
    assert head().shape[0] == 2  # no longer listening


def test_blend_map_loss_counts_only_known_maps():
    from jobs.training.blendmap import blend_map_loss

    logits = torch.full((3, 1, 2, 2), -2.0)  # not 0: at 0 BCE is ln 2 whatever the target
    maps = torch.zeros(3, 8, 8)
    maps[0, :4, :4] = 1.0
    known = torch.tensor([True, True, False])
    base = blend_map_loss(logits, maps, known)
    other = maps.clone()
    other[2] = 1.0  # an unknown map changes nothing
    assert float(blend_map_loss(logits, other, known)) == pytest.approx(float(base))
    other[1] = 1.0  # a known one does
    assert float(blend_map_loss(logits, other, known)) != pytest.approx(float(base))
    # the target is the map averaged onto the logits' grid: a logit that says so exactly has the least loss
    exact = torch.full((3, 1, 2, 2), -20.0)
    exact[0, 0, 0, 0] = 20.0
    assert float(blend_map_loss(exact, maps, known)) < 1e-6
    logits.requires_grad_(True)
    none = blend_map_loss(logits, maps, torch.zeros(3, dtype=torch.bool))
    none.backward()  # no known map: a zero that still backpropagates, so a batch of real fakes needs no branch
    assert float(none.detach()) == 0.0 and logits.grad is not None


def test_blend_map_is_flipped_with_its_crop_and_the_draws_are_unchanged():
    from jobs.training.augment import augment_with_map

    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = 200  # a bright left half, and a map over it
    mask = np.zeros((32, 32), np.float32)
    mask[:, :16] = 1.0
    flips = 0
    for seed in range(20):
        out, out_map = augment_with_map(image, mask, np.random.default_rng(seed), codec_p=0.5)
        bright_left = out[:, :16].mean() > out[:, 16:].mean()
        assert (out_map[:, :16].mean() == 1.0) == bright_left
        flips += not bright_left
        assert np.array_equal(out, augment(image, np.random.default_rng(seed), codec_p=0.5))
    assert 0 < flips < 20


def test_crop_set_gives_maps_only_when_asked_and_the_same_crops(tmp_path):
    rows = _rows(_toy_dataset(tmp_path / "toy"), "train", 48)
    plain = CropSet(rows, sbi=True, real_fakes=True, seed=0, codec_p=0.5)
    mapped = CropSet(rows, sbi=True, real_fakes=True, seed=0, codec_p=0.5, maps=True)
    seen = set()
    for index, (row, blend, label) in enumerate(mapped.items):
        crop, got_label, blend_map = mapped[index]
        assert len(plain[index]) == 2 and np.array_equal(plain[index][0], crop) and got_label == label
        kind = "blend" if blend else ("real" if label == 0 else "fake")
        seen.add(kind)
        if kind == "fake":
            assert blend_map is None  # a real fake's map is unknown
        elif kind == "real":
            assert blend_map.shape == crop.shape[:2] and not blend_map.any()
        else:
            assert blend_map.shape == crop.shape[:2] and 0 < blend_map.max() <= 1
    assert seen == {"blend", "real", "fake"}


def test_blend_map_run_resumes_exactly_and_ships_no_head(tmp_path):
    from pipeline.checkpoint import load_checkpoint

    update = {"sbi": True, "blend_map": 1.0}
    full = fit(_toy_config(tmp_path / "a", epochs=2).model_copy(update=update))
    interrupted = _toy_config(tmp_path / "c", epochs=2).model_copy(update=update)
    fit_stop_after_one(interrupted)
    resumed = fit(interrupted.model_copy(update={"resume": True}))
    a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=False)
    c = torch.load(tmp_path / "c" / "run" / "last.pt", weights_only=False)
    assert all(torch.allclose(a["blend_map_head"][k], c["blend_map_head"][k], atol=1e-5) for k in a["blend_map_head"])
    assert resumed["history"][-1]["train_loss"] == pytest.approx(full["history"][-1]["train_loss"], rel=1e-4)
    model, card = load_checkpoint(tmp_path / "a" / "run" / "best.safetensors")  # strict: no head weights inside
    assert card.training["hyperparameters"]["blend_map"] == 1.0
    assert all(0 < h["train_map_loss"] < h["train_loss"] for h in full["history"])  # logged apart, part of the sum


def test_label_smoothing_moves_targets_toward_a_half_and_reaches_the_loss(tmp_path):
    from jobs.training.train import smooth

    labels = torch.tensor([0.0, 1.0])
    assert torch.allclose(smooth(labels, 0.2), torch.tensor([0.1, 0.9]))
    assert torch.equal(smooth(labels, 0.0), labels)
    # a soft target's cross-entropy never falls below its entropy, H(0.2) = 0.500 nats, however well the model fits;
    # the same toy run without smoothing ends well below it (test_tiny_model_loss_falls_and_writes_checkpoints)
    state = fit(_toy_config(tmp_path, label_smoothing=0.4))
    assert min(h["train_loss"] for h in state["history"]) >= 0.5004
    assert state["history"][-1]["val_video_auc"] == 1.0  # it still ranks: smoothing bounds confidence, not order
