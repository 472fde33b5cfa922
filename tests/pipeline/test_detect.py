"""MTCNN face detection on real photos and videos; crops; IoU tracks."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.batch import object_column
from pipeline.config import DecodeConfig, DetectConfig
from pipeline.crop import crop_face
from pipeline.decode import DecodeStage, decode_bytes
from pipeline.detect import DetectStage, FaceDetector
from pipeline.tracking import box_iou, link_tracks


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectConfig(), device="cpu")


@pytest.fixture(scope="module")
def detect_stage():
    return DetectStage(DetectConfig(), device="cpu", crop_size=160)


def _frame(path):
    return decode_bytes(path.read_bytes(), DecodeConfig()).frames


def test_one_face_where_it_is(detector, samples_dir):
    (boxes, probs, landmarks), = detector.detect(_frame(samples_dir / "astronaut.jpg"))
    assert len(boxes) == 1 and probs[0] > 0.99
    x1, y1, x2, y2 = boxes[0]
    # Eileen Collins' face in skimage's astronaut photo lies around x 170–250, y 60–160
    assert 150 < x1 < 200 and 220 < x2 < 280 and 40 < y1 < 90 and 130 < y2 < 180
    # landmarks (eyes, nose, mouth corners) lie inside the box, eyes above the mouth
    assert np.all((landmarks[0][:, 0] > x1) & (landmarks[0][:, 0] < x2))
    assert landmarks[0][0, 1] < landmarks[0][3, 1]


def test_no_face_on_coffee(detector, samples_dir):
    (boxes, _, _), = detector.detect(_frame(samples_dir / "coffee.jpg"))
    assert len(boxes) == 0


def test_two_faces(detector, samples_dir):
    (boxes, _, _), = detector.detect(_frame(samples_dir / "astronauts_pair.jpg"))
    assert len(boxes) == 2
    assert sorted(b[0] < 512 for b in boxes) == [False, True]  # one in each half


@pytest.mark.parametrize("name, expected", [("facenet-pytorch/data/multiface.jpg", 4),
                                            ("face_recognition/examples/two_people.jpg", 2)])
def test_multiple_faces_on_shared_photos(detector, faces_dir, name, expected):
    (boxes, _, _), = detector.detect(_frame(faces_dir / name))
    assert len(boxes) >= expected


def test_large_frames_are_downscaled_and_boxes_mapped_back(samples_dir):
    frame = _frame(samples_dir / "astronaut.jpg")
    big = np.repeat(np.repeat(frame, 3, axis=1), 3, axis=2)  # 1536 x 1536
    small_cfg = FaceDetector(DetectConfig(detect_max_side=512), "cpu")
    (b1, _, _), = small_cfg.detect(frame)
    (b3, _, _), = small_cfg.detect(big)
    assert len(b3) == 1 and box_iou(b1, b3 / 3)[0, 0] > 0.8


def test_stage_crops_tracks_and_drops_frames(detect_stage, samples_dir):
    batch = DecodeStage(DecodeConfig(num_frames=8))({"uri": object_column([str(samples_dir / "pair_pan.mp4"), str(samples_dir / "coffee.jpg")])})
    out = detect_stage(batch)
    assert "frames" not in out
    crops, tracks = out["crops"][0], out["face_track"][0]
    assert crops.shape == (16, 160, 160, 3) and crops.dtype == np.uint8
    # two people over 8 frames → two tracks of 8 faces each
    assert sorted(np.bincount(tracks).tolist()) == [8, 8]
    assert out["crops"][1].shape[0] == 0 and out["frames_sampled"][1] == 1


@pytest.mark.parametrize("every,seen", [(1, 28), (4, 16)])
def test_tracks_follow_a_real_video(faces_dir, every, seen):
    # a street scene with several people walking: 32 frames over 4.2 s. Every frame detected: the linker
    # keeps the nearest person in (almost) every frame. Every 4th (the default): people walk in and out
    # between keyframes, so fewer frames are carried; the main person keeps a track over half of them.
    stage = DetectStage(DetectConfig(detect_every=every), device="cpu", crop_size=160)
    batch = DecodeStage(DecodeConfig(num_frames=32))({"uri": object_column([str(faces_dir / "facenet-pytorch/examples/video.mp4")])})
    out = stage(batch)
    tracks, frames = out["face_track"][0], out["face_frame"][0]
    assert len(tracks) >= 2 * seen
    main = np.bincount(tracks).argmax()
    assert len(np.unique(frames[tracks == main])) >= seen
    for track in np.unique(tracks):  # no track has two faces in one frame
        assert len(np.unique(frames[tracks == track])) == (tracks == track).sum()


def test_crop_keeps_aspect_and_pads():
    frame = np.full((100, 400, 3), 200, np.uint8)
    crop, transform = crop_face(frame, np.array([10, 10, 390, 90]), 64, margin=0.0)
    assert crop.shape == (64, 64, 3)
    # wide region → full width, zero padding above and below
    assert crop[0].max() == 0 and crop[-1].max() == 0 and crop[32].min() == 200
    assert transform.apply(np.array([[10, 10]]))[0, 0] == pytest.approx(0, abs=1)


def test_link_tracks_by_iou():
    frames = np.array([0, 0, 1, 1, 2, 5])
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [51, 50, 61, 60], [1, 0, 11, 10], [0, 1, 10, 11], [100, 100, 110, 110]])
    tracks = link_tracks(frames, boxes, min_iou=0.3, max_gap=1)
    assert tracks.tolist() == [0, 1, 1, 0, 0, 2]


def test_frames_shrunk_before_they_travel_give_the_same_faces(samples_dir):
    """The split scan plan shrinks frames in the decode actor (pipeline/resize.py); the detector must find
    the same faces, in source pixels, as on the full frames."""
    from pipeline.resize import shrink, working_size

    frame = _frame(samples_dir / "astronaut.jpg")
    big = np.repeat(np.repeat(frame, 3, axis=1), 3, axis=2)  # 1536 x 1536, over the 640 working size
    detector = FaceDetector(DetectConfig(), "cpu")
    _, size = working_size(1536, 1536, DetectConfig().detect_max_side)
    small = shrink(big, size)
    assert small.shape[1:3] == (640, 640) and shrink(small, size) is small
    (full_boxes, full_probs, full_points), = detector.detect(big)
    (boxes, probs, points), = detector.detect(small, source_size=(1536, 1536))
    assert len(boxes) == 1
    np.testing.assert_array_equal(boxes, full_boxes)
    np.testing.assert_array_equal(points, full_points)
    stage = DetectStage(DetectConfig(), "cpu", crop_size=160)
    full, shrunk = stage.faces_of(big), stage.faces_of(small, (1536, 1536))
    np.testing.assert_array_equal(full["face_boxes"], shrunk["face_boxes"])  # boxes in source pixels
    assert shrunk["crops"].shape == full["crops"].shape == (1, 160, 160, 3)


def test_detecting_every_second_frame_carries_faces_along_tracks(samples_dir):
    from pipeline.keyframes import first_seen_order, keyframe_indices

    assert keyframe_indices(8, 3).tolist() == [0, 3, 6, 7] and keyframe_indices(7, 3).tolist() == [0, 3, 6]
    assert first_seen_order(np.array([5, 2, 5, 9])).tolist() == [0, 1, 0, 2]
    frames = DecodeStage(DecodeConfig(num_frames=8)).decode_one(str(samples_dir / "pair_pan.mp4")).frames
    every = DetectStage(DetectConfig(detect_every=1), "cpu", crop_size=160).faces_of(frames)
    sparse = DetectStage(DetectConfig(detect_every=2), "cpu", crop_size=160).faces_of(frames)
    # the same 2 people in all 8 frames, as two tracks of 8 faces
    assert sorted(np.bincount(sparse["face_track"]).tolist()) == [8, 8]
    assert sparse["face_frame"].tolist() == every["face_frame"].tolist()
    for frame in range(8):
        a = every["face_boxes"][every["face_frame"] == frame]
        b = sparse["face_boxes"][sparse["face_frame"] == frame]
        if frame in (0, 2, 4, 6, 7):  # keyframes: MTCNN's own boxes
            assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))
        else:  # carried: each interpolated box lies on a detected one
            assert box_iou(b, a).max(axis=1).min() > 0.7


def test_carried_faces_are_interpolated_on_their_track_and_kept_near_their_keyframe():
    from pipeline.keyframes import carry_faces

    def faces(*boxes):
        b = np.array(boxes, np.float32).reshape(-1, 4)
        return b, np.full(len(b), 0.99, np.float32), np.repeat(b[:, None, :2], 5, axis=1)

    walker = [[0, 0, 100, 100], [20, 0, 120, 100], [40, 0, 140, 100]]  # 10 px per frame, on keyframes 0, 2, 4
    leaver, comer = [500, 500, 600, 600], [900, 0, 1000, 100]  # seen on keyframe 0 only / keyframe 2 only
    detected = [faces(walker[0], leaver), faces(walker[1], comer), faces(walker[2])]
    per_frame, tracks = carry_faces(np.array([0, 2, 4]), detected, 5, 0.3, 4)
    boxes = [b.tolist() for b, _, _ in per_frame]
    assert boxes[1] == [[10, 0, 110, 100], leaver]  # walker halfway between its keyframes; leaver kept (nearer 0)
    assert boxes[3] == [[30, 0, 130, 100], comer]  # the comer carried forward from keyframe 2, the leaver gone
    assert boxes[4] == [walker[2]] and len(boxes[0]) == len(boxes[2]) == 2
    walker_track = tracks[0][0]
    assert all(t[0] == walker_track for t in tracks) and len({walker_track, tracks[0][1], tracks[2][1]}) == 3
    np.testing.assert_allclose(per_frame[1][2][0], np.full((5, 2), [10, 0]))  # landmarks move with the box


def test_detected_frames_that_disagree_are_bisected():
    from pipeline.keyframes import disputed_midpoints

    def faces(*boxes):
        return (np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32),
                np.zeros((len(boxes), 5, 2), np.float32))

    keys = np.array([0, 4, 8, 9])
    still = [faces([0, 0, 10, 10])] * 4
    assert disputed_midpoints(keys, still, 0.3, 2).tolist() == []  # the same person throughout: carry
    jumped = [faces([0, 0, 10, 10]), faces([50, 50, 60, 60]), faces([50, 50, 60, 60]), faces([50, 50, 60, 60])]
    assert disputed_midpoints(keys, jumped, 0.3, 2).tolist() == [2]  # moved too far to link: detect between
    arrives = [faces(), faces(), faces([0, 0, 10, 10]), faces([0, 0, 10, 10])]
    assert disputed_midpoints(keys, arrives, 0.3, 2).tolist() == [6]  # someone came in between 4 and 8
    # after the middle is seen: still disputed on the side where the face came, never between neighbours
    keys = np.array([0, 4, 6, 8, 9])
    assert disputed_midpoints(keys, [faces(), faces(), faces(), *arrives[2:]], 0.3, 2).tolist() == [7]
    assert disputed_midpoints(np.array([0, 1]), arrives[1:3], 0.3, 2).tolist() == []


def test_bisection_finds_where_a_face_arrives_with_fewer_detections(samples_dir, monkeypatch):
    """A face present from frame 11 of 17: every-8 keyframes 0, 8, 16 disagree between 8 and 16; bisecting
    detects 12, 10, 11 (not all seven frames between), and every frame from 11 on has the face."""
    frame = _frame(samples_dir / "astronaut.jpg")[0]
    frames = np.stack([np.full_like(frame, 128)] * 11 + [frame] * 6)
    calls = []
    original = FaceDetector.detect
    monkeypatch.setattr(FaceDetector, "detect", lambda self, f, s=None: calls.append(len(f)) or original(self, f, s))
    out = DetectStage(DetectConfig(detect_every=8), "cpu", crop_size=160).faces_of(frames)
    assert calls == [3, 1, 1, 1]
    assert out["face_frame"].tolist() == list(range(11, 17))


@pytest.mark.parametrize("missing, tracks", [(range(5, 9), [17 - 4]), (range(5, 10), [5, 7])])
def test_keyframe_tracks_are_the_every_frame_tracks(samples_dir, missing, tracks):
    """``track_max_gap`` (4) counts sampled frames with keyframes too: a face missing from 4 frames stays one
    track, from 5 it is two, as with every frame detected. (Linked by detected-frame ordinal, the frames
    that bisection detects 1 apart let a track survive one missing detection only: 2 tracks, then 3.)"""
    frame = _frame(samples_dir / "astronaut.jpg")[0]
    frames = np.stack([np.full_like(frame, 128) if i in missing else frame for i in range(17)])
    every = DetectStage(DetectConfig(detect_every=1), "cpu", crop_size=160).faces_of(frames)
    sparse = DetectStage(DetectConfig(detect_every=4), "cpu", crop_size=160).faces_of(frames)
    assert np.bincount(every["face_track"]).tolist() == tracks
    assert np.bincount(sparse["face_track"]).tolist() == tracks
    assert sparse["face_frame"].tolist() == every["face_frame"].tolist()


def test_keyframes_further_apart_than_the_gap_still_link():
    """With ``detect_every`` above ``track_max_gap`` + 1 the frames between two keyframes were not looked at:
    the same face on both ends is one track, not a dispute to bisect."""
    from pipeline.keyframes import carry_faces, disputed_midpoints

    face = (np.array([[0, 0, 100, 100]], np.float32), np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32))
    keys = np.array([0, 8, 16])
    assert disputed_midpoints(keys, [face] * 3, 0.3, 4).tolist() == []
    _, tracks = carry_faces(keys, [face] * 3, 17, 0.3, 4)
    assert {int(t[0]) for t in tracks} == {0}


def test_a_zoom_seen_on_few_frames_keeps_its_one_track(samples_dir):
    """Four frames of a zoom: keyframes 0 and 3 do not link, so frames 1 and 2 are detected, not guessed."""
    frames = DecodeStage(DecodeConfig(num_frames=4)).decode_one(str(samples_dir / "astronaut_zoom.mp4")).frames
    out = DetectStage(DetectConfig(detect_every=4), "cpu", crop_size=160).faces_of(frames)
    assert out["face_frame"].tolist() == [0, 1, 2, 3] and out["face_track"].tolist() == [0, 0, 0, 0]


def test_small_faces_are_searched_for_where_no_large_one_was_found(samples_dir, monkeypatch):
    import cv2

    frame = _frame(samples_dir / "astronaut.jpg")[0]
    small = cv2.resize(frame, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)[None]   # the face ≈ 38 px
    large = cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)[None]       # the face ≈ 160 px
    two_pass = FaceDetector(DetectConfig(min_face_px=24, first_pass_min_face_px=80), "cpu")
    one_pass = FaceDetector(DetectConfig(min_face_px=24, first_pass_min_face_px=None), "cpu")
    calls = []
    original = FaceDetector._detect
    monkeypatch.setattr(FaceDetector, "_detect", lambda self, f, s, m: calls.append(m) or original(self, f, s, m))
    for frames, passes in [(small, [80, 24]), (large, [80])]:
        calls.clear()
        (boxes, probs, _), = two_pass.detect(frames)
        assert calls == passes                                       # the second pass only where the first found none
        (expected, _, _), = one_pass.detect(frames)
        assert len(boxes) == len(expected) == 1 and box_iou(boxes, expected)[0, 0] > 0.8  # pyramids differ a little


def test_channels_last_mtcnn_finds_the_same_faces(samples_dir):
    """The CPU detector runs MTCNN's networks in NHWC for speed: the faces and crops must not change."""
    from pipeline.detect import ChannelsLast

    frames = DecodeStage(DecodeConfig(num_frames=8)).decode_one(str(samples_dir / "pair_pan.mp4")).frames
    fast = DetectStage(DetectConfig(detect_every=1), "cpu", crop_size=160)
    plain = DetectStage(DetectConfig(detect_every=1), "cpu", crop_size=160)
    assert all(isinstance(getattr(fast.detector.mtcnn, n), ChannelsLast) for n in ("pnet", "rnet", "onet"))
    for name in ("pnet", "rnet", "onet"):
        setattr(plain.detector.mtcnn, name, getattr(plain.detector.mtcnn, name).net)
    a, b = fast.faces_of(frames), plain.faces_of(frames)
    assert len(a["crops"]) >= 8 and a["face_frame"].tolist() == b["face_frame"].tolist()
    np.testing.assert_allclose(a["face_boxes"], b["face_boxes"], atol=0.01)
    assert np.abs(a["crops"].astype(int) - b["crops"].astype(int)).max() <= 1


def test_a_detector_crash_leaves_one_line_on_the_row(detect_stage, samples_dir, monkeypatch, caplog):
    """The row keeps one line of the crash (a botocore or CUDA message runs to pages); the log keeps the traceback."""
    batch = DecodeStage(DecodeConfig())({"uri": object_column([str(samples_dir / "astronaut.jpg")])})

    def crashes(*args, **kwargs):
        raise RuntimeError("kernel failed\n" + "stack frame\n" * 200)

    monkeypatch.setattr(detect_stage, "faces_of", crashes)
    out = detect_stage(batch)
    assert out["error"][0] == "face detection failed: RuntimeError: kernel failed"
    assert out["error_code"][0] == "detect_failed" and out["crops"][0].shape == (0, 160, 160, 3)
    assert any(r.exc_info and "astronaut.jpg" in r.getMessage() for r in caplog.records)


def test_one_detector_called_from_threads_gives_each_call_its_own_face_size(samples_dir, monkeypatch):
    """A ScoringPipeline may be shared by threads: one call must not change what another searches for. Frames of two
    sizes search from two minimum face sizes; the calls are interleaved so the small frame's call starts while the
    large one's is about to search (the order in which, with the size set on the shared MTCNN, the large frame's
    22 px face was searched for from 40 px and lost)."""
    import threading

    import pipeline.detect as detect

    photo = _frame(samples_dir / "astronaut.jpg")
    small = np.ascontiguousarray(photo[:, :256, 96:352])  # 256 px, not shrunk: faces from 40 px
    large = np.zeros((1, 1024, 1024, 3), np.uint8)
    large[:, :512, :512] = photo[0]  # shrunk to 256 px its face is ≈ 22 px: searched from 12 px
    detector = FaceDetector(DetectConfig(first_pass_min_face_px=None, detect_max_side=256), "cpu")
    alone = {"small": detector.detect(small)[0], "large": detector.detect(large)[0]}
    assert len(alone["small"][0]) == len(alone["large"][0]) == 1
    large_searching, small_started = threading.Event(), threading.Event()
    working_size, shrink = detect.working_size, detect.shrink

    def sized(width, height, max_side):
        if width == 256:
            large_searching.wait(10)
        return working_size(width, height, max_side)

    def shrunk(frames, size):
        if frames.shape[2] == 1024:
            large_searching.set()
            small_started.wait(10)
        else:
            small_started.set()
        return shrink(frames, size)

    monkeypatch.setattr(detect, "working_size", sized)
    monkeypatch.setattr(detect, "shrink", shrunk)
    together = {}
    threads = [threading.Thread(target=lambda k=k, f=f: together.update({k: detector.detect(f)[0]}))
               for k, f in (("large", large), ("small", small))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for key, (boxes, probs, _) in alone.items():
        assert len(together[key][0]) == len(boxes), key
        np.testing.assert_allclose(together[key][0], boxes, atol=1e-3)
        np.testing.assert_allclose(together[key][1], probs, atol=1e-5)


@pytest.mark.parametrize("frames", [
    np.zeros((1, 0, 0, 3), np.uint8), np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8, 1), np.uint8),
    np.zeros((1, 8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((1, 3, 8, 8), np.uint8),
    np.zeros((1, 8, 8, 3), np.float32)], ids=["0x0", "gray", "gray1", "rgba", "one frame", "chw", "float"])
def test_frames_outside_the_contract_are_invalid_input_naming_them(detect_stage, detector, frames):
    """Not (N, H, W, 3) uint8: refused with a stable code naming what came, never cast (0..1 → black) or crashed."""
    from pipeline.errors import InvalidInputError

    out = detect_stage({"uri": object_column(["given"]), "frames": object_column([frames])})
    assert out["error_code"][0] == "invalid_input" and f"shape {frames.shape} dtype {frames.dtype}" in out["error"][0]
    assert out["crops"][0].shape[0] == 0
    with pytest.raises(InvalidInputError, match="uint8"):
        detector.detect(frames)


def test_a_stage_built_by_hand_crops_as_the_card_says(detector_checkpoint, tmp_path):
    """DetectStage() with no margin or crop size takes the checkpoint's (the crops its weights were trained on): the
    shipped card's 0.15, not the 0.3 default, or its fake scores REAL."""
    import shutil

    from pipeline.card import read_card
    from pipeline.config import DEFAULT_CHECKPOINT
    from pipeline.graph import card_or_none, crop_geometry

    stage = DetectStage(device="cpu")
    assert (stage.crop_size, stage.margin) == crop_geometry(None, None, card_or_none(DEFAULT_CHECKPOINT))  # shipped
    card = read_card(detector_checkpoint)
    weights = shutil.copy(detector_checkpoint, tmp_path / "m.safetensors")
    card.architecture.crop_margin, card.architecture.input_size = 0.15, 192
    (tmp_path / "m.json").write_text(card.model_dump_json())
    stage = DetectStage(DetectConfig(), "cpu", checkpoint=weights)
    assert (stage.crop_size, stage.margin) == (192, 0.15)
    stage = DetectStage(DetectConfig(margin=0.5), "cpu", crop_size=96, checkpoint=weights)
    assert (stage.crop_size, stage.margin) == (96, 0.5)  # what is given wins
    assert DetectStage(device="cpu", checkpoint=tmp_path / "none.safetensors").margin == 0.3  # no model: the default
