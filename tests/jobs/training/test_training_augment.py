"""The codec round trip, camera capture, erased parts and flips (jobs/training/augment.py)."""

from __future__ import annotations

import numpy as np

from jobs.training.augment import augment, capture, codec_roundtrip, h264
from jobs.training.sbi import self_blend


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


def test_the_codec_path_changes_pixels_at_full_scale():
    """At scale 1 the resize is a no-op: only the H.264 pass can change the crop, so it must (else training loses its
    guard against "was it a video")."""
    from jobs.training.augment import SCALES, codec_roundtrip

    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    seeds = [s for s in range(50) if np.random.default_rng(s).integers(len(SCALES)) == len(SCALES) - 1][:3]
    assert seeds
    for seed in seeds:
        assert not np.array_equal(codec_roundtrip(image, np.random.default_rng(seed)), image)
