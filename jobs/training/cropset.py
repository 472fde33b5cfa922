"""The training crops as a torch Dataset: which crops a run reads, what each item becomes (self-blend, cross-blend,
capture, parts, codec), and the order an epoch draws them in. Item ``i`` of epoch ``e`` always gets the same
transform, so a resumed run replays an uninterrupted one."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from jobs.training.augment import augment_with_map, capture, erase_part
from jobs.training.mesh import outlines
from jobs.training.prepare import decode_png, load_crop_table
from jobs.training.sbi import self_blend
from jobs.training.xblend import cross_blend, normalised, pick_donor


log = logging.getLogger(__name__)


def crop_rows(dataset: Path, split: str, max_per_video: int) -> list[dict]:
    """Crop rows of a split, at most ``max_per_video`` per video, evenly over its frames; each row is
    tagged with its ``source`` (the dataset folder's name) so validation can weigh real sources equally."""
    try:
        table = load_crop_table(dataset, split)
    except FileNotFoundError:
        return []
    rows = table.to_pylist()
    for row in rows:
        row["source"] = Path(dataset).name
    by_video: dict[str, list[dict]] = {}
    for row in rows:
        by_video.setdefault(row["video"], []).append(row)
    kept = []
    for video in sorted(by_video):
        members = sorted(by_video[video], key=lambda r: (r["frame"], r["track"]))
        step = max(1, math.ceil(len(members) / max_per_video))
        kept.extend(members[::step][:max_per_video])
    return kept


class CropSet(torch.utils.data.Dataset):
    """(uint8 crop, label) items; item ``i`` of epoch ``e`` always gets the same random transform."""

    def __init__(self, rows: list[dict], sbi: bool, real_fakes: bool, seed: int, train: bool = True, codec_p: float = 0.0,
                 cross_p: float = 0.0, capture_p: float = 0.0, parts_p: float = 0.0, maps: bool = False,
                 mesh_p: float = 0.0, local_p: float = 0.0):
        self.crops = [decode_png(r["crop_png"]) for r in rows]
        self.sources = [r.get("source", "") for r in rows]
        self.codec_p, self.cross_p, self.capture_p, self.parts_p = codec_p, cross_p, capture_p, parts_p
        self.maps = maps  # items carry their blend map too (zeros for a real, None for a real fake)
        self.boxes = [np.asarray(r["box"], np.float32) for r in rows]
        self.landmarks = [np.asarray(r["landmarks"], np.float32).reshape(5, 2) for r in rows]
        self.videos = [r["video"] for r in rows]
        self.seed, self.train, self.epoch = seed, train, 0
        # donors for cross-identity blends: real faces, compared by pose; never from the same video
        self.donors = np.array([r["label"] == "REAL" for r in rows], bool)
        self.poses = normalised(np.stack(self.landmarks)) if rows else np.zeros((0, 5, 2), np.float32)
        self.mesh_p, self.local_p = mesh_p, local_p
        # dense outlines of the reals that get blended: ~5 ms a crop, once per run, only when asked
        self.outlines = (dict(zip(*_real_outlines(rows, self.crops, self.boxes))) if mesh_p and sbi and train else {})
        self.video_ids = np.unique(np.array(self.videos, object), return_inverse=True)[1] if rows else np.zeros(0, int)
        # (row index, make a self-blended fake?, label)
        self.items: list[tuple[int, bool, int]] = []
        for i, row in enumerate(rows):
            if row["label"] == "REAL":
                self.items.append((i, False, 0))
                if sbi and train:
                    self.items.append((i, True, 1))
            elif real_fakes or not train:
                self.items.append((i, False, 1))

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple:
        row, blend, label = self.items[index]
        crop = self.crops[row]
        if not self.train:
            return crop, label
        # a map only when asked: a 224x224 float per crop is not free on the hot path of every other run
        blend_map = np.zeros(crop.shape[:2], np.float32) if self.maps and (label == 0 or blend) else None
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.capture_p and rng.random() < self.capture_p:  # no draw when off: old runs replay
            crop = capture(crop, rng)
        if blend:
            donor = (pick_donor(self.poses[row], self.poses, self.donors & (self.video_ids != self.video_ids[row]), rng)
                     if self.cross_p and rng.random() < self.cross_p else None)  # no draw when off: old runs replay
            if donor is None:
                outline = (self.outlines[row] if self.mesh_p and rng.random() < self.mesh_p else None)  # no draw when off
                part = bool(self.local_p) and rng.random() < self.local_p  # no draw when off
                crop, blend_map = self_blend(crop, self.boxes[row], self.landmarks[row], rng, outline, part)
            else:
                crop, blend_map = cross_blend(crop, self.boxes[row], self.landmarks[row], self.crops[donor], self.landmarks[donor], rng)
        if self.parts_p and rng.random() < self.parts_p:  # no draw when off: old runs replay
            crop = erase_part(crop, self.landmarks[row], rng)
        crop, blend_map = augment_with_map(crop, blend_map if self.maps else None, rng, self.codec_p)
        return (crop, label, blend_map) if self.maps else (crop, label)


def _real_outlines(rows: list[dict], crops: list[np.ndarray], boxes: list[np.ndarray]) -> tuple[list[int], np.ndarray]:
    reals = [i for i, r in enumerate(rows) if r["label"] == "REAL"]
    started = time.monotonic()
    points = outlines([crops[i] for i in reals], [boxes[i] for i in reals])
    log.warning("dense face outlines of %d real crops in %.0f s", len(reals), time.monotonic() - started)
    return reals, points


def item_weights(dataset: CropSet, balance: str) -> torch.Tensor | None:
    """Per-item sampling weight: with ``sqrt``, a source of n crops gets a total weight of sqrt(n)."""
    if balance == "none":
        return None
    counts: dict[str, int] = {}
    for row, _, _ in dataset.items:
        counts[dataset.sources[row]] = counts.get(dataset.sources[row], 0) + 1
    return torch.tensor([counts[dataset.sources[row]] ** -0.5 for row, _, _ in dataset.items], dtype=torch.float64)


def paired_order(dataset: CropSet, weights: torch.Tensor | None, draw: int, generator: torch.Generator) -> list[int]:
    """``draw`` crops in which every real crop sits next to its own pseudo-fake. Reals and fakes are drawn as
    the unpaired draw draws them (weighted, without replacement); the pseudo-fakes it drew are swapped for
    those of the reals it drew, so labels and sources keep their shares. Lone crops (fakes) go out two at a
    time: with an even batch size no pair is cut by a batch's end."""
    partner: dict[int, int] = {}
    by_row: dict[int, list[int]] = {}
    for index, (row, _, _) in enumerate(dataset.items):
        by_row.setdefault(row, []).append(index)
    for members in by_row.values():
        if len(members) == 2:
            partner[members[0]] = members[1]
    # a weighted order of every item (its first k are a weighted draw of k), read until ``draw`` are placed
    drawn = (torch.multinomial(weights, len(weights), replacement=False, generator=generator) if weights is not None
             else torch.randperm(len(dataset.items), generator=generator)).tolist()
    order: list[int] = []
    lone: list[int] = []
    for index in drawn:
        if index in partner:
            order += [index, partner[index]]
        elif dataset.items[index][1]:  # a pseudo-fake: its real brings it if drawn
            continue
        elif lone:
            order += lone + [index]
            lone = []
        else:
            lone = [index]
        if len(order) >= draw:
            break
    return (order + lone)[:draw]


def epoch_order(dataset: CropSet, weights: torch.Tensor | None, draw: int, paired: bool,
                generator: torch.Generator) -> list[int]:
    """One epoch's items: with weights a weighted draw of ``draw`` without replacement (every epoch a new,
    source-balanced subset); without, a permutation of all of them (the caller takes what it needs)."""
    if paired:
        return paired_order(dataset, weights, draw, generator)
    if weights is None:
        return torch.randperm(len(dataset.items), generator=generator).tolist()
    return torch.multinomial(weights, draw, replacement=False, generator=generator).tolist()


def collate(items: list[tuple]) -> tuple:
    """(crops, labels), or with blend maps (crops, labels, maps, which maps are known)."""
    crops, labels = np.stack([i[0] for i in items]), torch.tensor([i[1] for i in items], dtype=torch.float32)
    if len(items[0]) == 2:
        return crops, labels
    known = torch.tensor([i[2] is not None for i in items])
    maps = torch.from_numpy(np.stack([i[2] if i[2] is not None else np.zeros(crops.shape[1:3], np.float32) for i in items]))
    return crops, labels, maps, known
