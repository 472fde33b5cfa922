"""The training crop set (jobs/training/cropset.py): which transform each item gets, in which order, and the draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jobs.training.cropset import CropSet, crop_rows, item_weights, paired_order

from training_fixtures import toy_dataset


def test_outline_masks_only_when_asked_and_outlines_only_of_reals(tmp_path, monkeypatch):
    import jobs.training.cropset as cropset_module

    rows = crop_rows(toy_dataset(tmp_path / "toy"), "train", 48)
    seen = []
    real_blend = cropset_module.self_blend
    monkeypatch.setattr(cropset_module, "self_blend", lambda *a: seen.append(a[4] is not None) or real_blend(*a))
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


def test_local_blends_only_when_asked(tmp_path, monkeypatch):
    import jobs.training.cropset as cropset_module

    rows = crop_rows(toy_dataset(tmp_path / "toy"), "train", 48)
    seen = []
    real_blend = cropset_module.self_blend
    monkeypatch.setattr(cropset_module, "self_blend", lambda *a: seen.append(a[5]) or real_blend(*a))
    for local_p, expect in [(0.0, "none"), (1.0, "all"), (0.5, "some")]:
        crops = CropSet(rows, sbi=True, real_fakes=True, seed=0, local_p=local_p)
        seen.clear()
        for i in range(len(crops)):
            crops[i]
        assert seen, local_p
        got = "none" if not any(seen) else "all" if all(seen) else "some"
        assert got == expect, (local_p, got)


def test_capture_comes_before_the_blend_for_any_label_and_only_when_asked(tmp_path, monkeypatch):
    import jobs.training.cropset as cropset_module

    rows = crop_rows(toy_dataset(tmp_path / "toy"), "train", 48)
    calls = []
    real_capture, real_blend = cropset_module.capture, cropset_module.self_blend
    monkeypatch.setattr(cropset_module, "capture", lambda image, rng: calls.append("capture") or real_capture(image, rng))
    monkeypatch.setattr(cropset_module, "self_blend", lambda *a: calls.append("blend") or real_blend(*a))
    off = CropSet(rows, sbi=True, real_fakes=True, seed=0)
    for i in range(len(off)):
        off[i]
    assert "capture" not in calls and "blend" in calls
    on = CropSet(rows, sbi=True, real_fakes=True, seed=0, capture_p=1.0)
    for i, (row, blend, label) in enumerate(on.items):
        calls.clear()
        on[i]
        assert calls == (["capture", "blend"] if blend else ["capture"]), (label, calls)


def test_parts_erased_after_the_blend_for_any_label_and_only_when_asked(tmp_path, monkeypatch):
    import jobs.training.cropset as cropset_module

    rows = crop_rows(toy_dataset(tmp_path / "toy"), "train", 48)
    calls = []
    real_erase, real_blend = cropset_module.erase_part, cropset_module.self_blend
    monkeypatch.setattr(cropset_module, "erase_part", lambda *a: calls.append("erase") or real_erase(*a))
    monkeypatch.setattr(cropset_module, "self_blend", lambda *a: calls.append("blend") or real_blend(*a))
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


def test_paired_draw_puts_each_real_beside_its_pseudo_fake_and_keeps_the_shares(tmp_path):
    data = toy_dataset(tmp_path / "toy")
    rows = crop_rows(data, "train", 48)
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


def test_crop_set_gives_maps_only_when_asked_and_the_same_crops(tmp_path):
    rows = crop_rows(toy_dataset(tmp_path / "toy"), "train", 48)
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
