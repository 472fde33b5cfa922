"""``deepfakestream train``: SRM-EfficientNet detector from a prepared crop dataset.

Reals come from the dataset's ``train`` split; fakes are self-blended images made on the fly from those
reals (and, with ``--real-fakes``, the split's manipulated videos too). Validation is video-level ROC
AUC on the ``val`` split (mean face score per video). Every epoch writes ``last.pt`` (full state, for
``--resume``); the best epoch is written as ``best.safetensors`` + model card. Seeds fix the data order,
the augmentations and dropout per epoch, so a resumed run continues exactly as an uninterrupted one.
Single process by default; ``num_workers > 0`` runs the same loop data-parallel under Ray Train.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, FilePath
from timm.optim import param_groups_layer_decay

from jobs.training.metrics import balanced_weights, binary_metrics
from jobs.training.prepare import decode_png, load_crop_table
from jobs.training.augment import augment_with_map, capture, erase_part
from jobs.training.blendmap import BlendMapHead, blend_map_loss
from jobs.training.mesh import outlines
from jobs.training.sam import ascend, descend, frozen_norm_stats
from jobs.training.sbi import self_blend
from jobs.training.xblend import cross_blend, normalised, pick_donor
from pipeline.atomic import replacing
from pipeline.card import ModelCard, ModelSpec, read_card
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.crop import DEFAULT_MARGIN
from pipeline.errors import CheckpointError, DeepfakeStreamError
from pipeline.imagenet import load_imagenet_lite
from pipeline.model import DeepfakeDetector
from pipeline.preprocess import crops_to_tensor

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    dataset: Path
    out_dir: Path
    extra_datasets: list[Path] = Field(default_factory=list, description="more prepared datasets: train split trained on, val split validated on")
    encoder: str = "tf_efficientnet_lite0"
    input_mode: Literal["srm", "rgb+srm", "rgb"] = "rgb+srm"
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    sbi: bool = True
    real_fakes: bool = False
    max_crops_per_video: int = Field(48, ge=1)
    patience: int = Field(3, ge=1)
    seed: int = 0
    num_workers: int = Field(0, ge=0, description="0 = single process; N = Ray Train data-parallel workers")
    use_gpu: bool = False
    threads: int = Field(0, ge=0)
    resume: bool = False
    imagenet: bool = True
    init: FilePath | None = Field(None, description="start from this trained detector's weights (same encoder, input "
                              "mode, crop size and margin) instead of ImageNet's; e.g. to fine-tune a shipped soup")
    version: str = "dev"
    data_description: str = Field("", description="what the data is and its terms, for the model card")
    max_steps_per_epoch: int | None = None
    codec_p: float = Field(0.5, ge=0, le=1, description="share of crops (any label) sent through the H.264 round trip")
    capture_p: float = Field(0.0, ge=0, le=1, description="share of crops (any label) given a camera's grain or "
                             "softness before any blend (augment.capture); 0 = off")
    cross_p: float = Field(0.0, ge=0, le=1, description="share of pseudo-fakes blended from another video's face "
                           "(xblend.py) instead of the face itself (sbi.py)")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="0 = off; else validate and ship an exponential moving "
                             "average of the weights (per step), which steadies a small, noisy training set")
    parts_p: float = Field(0.0, ge=0, le=1, description="share of crops (any label) with the eyes, nose or mouth "
                           "blacked out after any blend (augment.erase_part); 0 = off")
    paired: bool = Field(False, description="draw each real crop together with its pseudo-fake, side by side in "
                         "one batch, so the only difference the loss sees between them is the blend")
    layer_decay: float = Field(0.0, ge=0, le=1, description="0 = off (one learning rate); else the encoder's "
                               "layers learn at lr x layer_decay**depth below its top (timm's BEiT-style groups), "
                               "so the ImageNet features near the input move least")
    blend_map: float = Field(0.0, ge=0, description="0 = off; else the weight of an auxiliary loss: predict where "
                             "each pseudo-fake was blended (blendmap.py, Face X-ray); training only")
    drop_path: float = Field(0.0, ge=0, lt=1, description="0 = off; else stochastic depth: the encoder's residual "
                             "blocks are skipped at random in training, the deepest at this rate (timm's linear "
                             "schedule); training only")
    mesh_p: float = Field(0.0, ge=0, le=1, description="share of self-blends whose mask follows the face's dense "
                          "outline (mesh.py, MediaPipe's face mesh) instead of MTCNN's box and 5 points; 0 = off")
    sam_rho: float = Field(0.0, ge=0, description="0 = off; else sharpness-aware minimisation: each step's gradient is "
                           "taken at the weights moved this far up the normalised gradient (SBI's optimiser; 2x a step's cost)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="0 = off; else targets move this far toward 0.5 "
                                   "(0 -> eps/2, 1 -> 1 - eps/2), so no crop is pushed to certainty; training only")
    source_balance: Literal["none", "sqrt"] = Field(
        "sqrt", description="sqrt: each source's share of an epoch grows with the square root of its size, so "
                            "thousands of photos cannot drown a few hundred video frames")


# ----------------------------------------------------------------------------------------------- data

def _rows(dataset: Path, split: str, max_per_video: int) -> list[dict]:
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
                 mesh_p: float = 0.0):
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
        self.mesh_p = mesh_p
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
                crop, blend_map = self_blend(crop, self.boxes[row], self.landmarks[row], rng, outline)
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


def collate(items: list[tuple]) -> tuple:
    """(crops, labels), or with blend maps (crops, labels, maps, which maps are known)."""
    crops, labels = np.stack([i[0] for i in items]), torch.tensor([i[1] for i in items], dtype=torch.float32)
    if len(items[0]) == 2:
        return crops, labels
    known = torch.tensor([i[2] is not None for i in items])
    maps = torch.from_numpy(np.stack([i[2] if i[2] is not None else np.zeros(crops.shape[1:3], np.float32) for i in items]))
    return crops, labels, maps, known


# ---------------------------------------------------------------------------------------------- model

def crop_geometry(datasets: list) -> tuple[int, float]:
    """(crop size, margin) shared by every prepared dataset; the model is built for it and its card says so."""
    found = {}
    for dataset in datasets:
        manifest = json.loads((Path(dataset) / "manifest.json").read_text())
        found[str(dataset)] = (int(manifest["crop_size"]), float(manifest.get("margin", DEFAULT_MARGIN)))
    if len(set(found.values())) > 1:
        raise ValueError(f"prepared datasets differ in (crop size, margin): {found}; prepare them alike")
    return next(iter(found.values()))


def smooth(labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Label smoothing for a binary target: 0 -> eps/2, 1 -> 1 - eps/2 (eps = 0 leaves it be)."""
    return labels * (1 - eps) + eps / 2


def build_model(config: TrainConfig, input_size: int, crop_margin: float = DEFAULT_MARGIN) -> DeepfakeDetector:
    # One start for every run, whatever its seed: runs are averaged into soups (jobs/training/soup.py), and
    # two heads initialised apart hold their hidden units in different orders, so their mean is no network.
    torch.manual_seed(0)
    model = DeepfakeDetector(ModelSpec(encoder=config.encoder, input_mode=config.input_mode, input_size=input_size,
                                       crop_margin=crop_margin), drop_path_rate=config.drop_path)
    if config.init:  # whole network, head included; its card must describe the network this run builds
        start, card = load_checkpoint(config.init)
        if card.architecture != model.spec:
            raise CheckpointError(f"--init {config.init} is {card.architecture.model_dump()}, this run builds "
                                  f"{model.spec.model_dump()}: prepare crops of its size and margin, same encoder")
        model.load_state_dict(start.state_dict())
    elif config.imagenet:
        model.load_encoder_imagenet(load_imagenet_lite(config.encoder))
    return model


def build_optimizer(model: DeepfakeDetector, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; with ``layer_decay`` one group per encoder layer (timm's grouping: stem, each block, conv head)
    at lr x decay**(layers above it), the new head at the full lr. Weight decay stays on every parameter
    as in the one-group optimizer, so layer decay is the only difference between the two."""
    if not config.layer_decay:
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    groups = param_groups_layer_decay(model.encoder, config.weight_decay, weight_decay_exclude_1d=False,
                                      layer_decay=config.layer_decay)
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    groups.append({"params": [p for p in model.parameters() if id(p) not in encoder_ids], "lr_scale": 1.0,
                   "weight_decay": config.weight_decay})
    for group in groups:
        group["lr"] = config.lr * group.pop("lr_scale")
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def predict(model: torch.nn.Module, crops: list[np.ndarray], device: torch.device, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            pixels = crops_to_tensor(np.stack(crops[start:start + batch_size]), device)
            out.append(torch.sigmoid(model(pixels).float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def validate(model: torch.nn.Module, val: CropSet, device: torch.device) -> dict[str, Any]:
    """Video-level metrics on held-out crops (video score = mean of its face scores).

    ``val_video_auc`` (the selection metric) weighs each real source equally (``balanced_weights``);
    ``val_ffpp_auc`` is FF++ alone; ``val_real_mean/<source>`` shows how each real source scores."""
    from sklearn.metrics import roc_auc_score

    if not len(val):
        return {}
    indices = [row for row, _, _ in val.items]
    labels = np.array([label for _, _, label in val.items])
    scores = predict(model, [val.crops[i] for i in indices], device)
    videos = [val.videos[i] for i in indices]
    by_video: dict[str, list[int]] = {}
    for k, vid in enumerate(videos):
        by_video.setdefault(vid, []).append(k)
    video_ids = sorted(by_video)
    video_scores = np.array([scores[by_video[v]].mean() for v in video_ids])
    video_labels = np.array([labels[by_video[v][0]] for v in video_ids])
    video_sources = [val.sources[indices[by_video[v][0]]] for v in video_ids]
    frame = binary_metrics(labels, scores, 0.5)
    out: dict[str, Any] = {"val_frame_auc": frame["roc_auc"], "val_videos": len(video_ids), "val_faces": len(scores)}
    if len(np.unique(video_labels)) == 2:
        out["val_video_auc"] = float(roc_auc_score(video_labels, video_scores, sample_weight=balanced_weights(video_labels, video_sources)))
        fake_sources = {s for s, y in zip(video_sources, video_labels) if y == 1}
        own = np.array([s in fake_sources for s in video_sources])
        if len(np.unique(video_labels[own])) == 2:
            out["val_ffpp_auc"] = float(roc_auc_score(video_labels[own], video_scores[own]))
    for source in sorted(set(video_sources)):
        members = np.array([s == source and y == 0 for s, y in zip(video_sources, video_labels)])
        if members.any():
            out[f"val_real_mean/{source}"] = float(video_scores[members].mean())
    return out


# ------------------------------------------------------------------------------------------- training

class ResumeMismatchError(DeepfakeStreamError, ValueError):
    """``--resume`` with settings that differ from the run's own: the saved optimizer and schedule would carry
    the old ones on silently (or fail deep in torch), so the run must be resumed as it was started."""

    code = "resume_mismatch"


# may differ on resume: where the data and the run live, and how this machine runs it
RESUME_FREE = {"dataset", "out_dir", "extra_datasets", "resume", "threads", "num_workers", "use_gpu", "version",
               "data_description", "patience"}


_UNKNOWN = object()


def _default(name: str) -> Any:
    """A TrainConfig field's default as JSON would hold it; _UNKNOWN when it has none plain enough to compare."""
    value = TrainConfig.model_fields[name].get_default(call_default_factory=True)
    return value if value is None or isinstance(value, (bool, int, float, str)) else _UNKNOWN


def check_resume(saved: dict | None, config: TrainConfig, path: Path) -> None:
    if saved is None:
        return
    now = config.model_dump(mode="json")
    # a setting newer than the run was not in its config: the run had that setting's default (new options
    # default to the old behaviour), so resuming with any other value would change it mid-run
    was = {k: saved[k] if k in saved else _default(k) for k in now}
    changed = sorted(k for k in now if k not in RESUME_FREE and was[k] is not _UNKNOWN and was[k] != now[k])
    if changed:
        raise ResumeMismatchError(f"{path} was started with " + ", ".join(f"{k}={was[k]!r}" for k in changed)
                                  + "; resume with the same settings (here: " + ", ".join(f"{k}={now[k]!r}" for k in changed)
                                  + "), or start a new run in another folder")


def _unwrap(model: torch.nn.Module) -> DeepfakeDetector:
    return model.module if hasattr(model, "module") else model


def fit(config: TrainConfig, distributed: bool = False) -> dict[str, Any]:
    """The training loop; runs as-is in one process or inside each Ray Train worker."""
    from tqdm import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world = 0, 1
    if distributed:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        rank, world = context.get_world_rank(), context.get_world_size()
        device = ray.train.torch.get_device()
    else:
        device = torch.device("cuda" if config.use_gpu and torch.cuda.is_available() else "cpu")
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((Path(config.dataset) / "manifest.json").read_text())
    input_size, margin = crop_geometry([config.dataset, *config.extra_datasets])

    train_rows = _rows(config.dataset, "train", config.max_crops_per_video)
    for extra in config.extra_datasets:
        train_rows += _rows(extra, "train", config.max_crops_per_video)
    train_set = CropSet(train_rows, config.sbi, config.real_fakes, config.seed, codec_p=config.codec_p,
                        cross_p=config.cross_p, capture_p=config.capture_p, parts_p=config.parts_p,
                        maps=bool(config.blend_map), mesh_p=config.mesh_p)
    val_rows = [r for d in [config.dataset, *config.extra_datasets] for r in _rows(d, "val", config.max_crops_per_video)]
    val_set = CropSet(val_rows, False, True, config.seed, train=False)
    log.warning("training on %d items (%d crops), validating on %d crops", len(train_set), len(train_rows), len(val_set))
    if not len(train_set):
        raise ValueError(f"no training crops in {config.dataset} (split 'train')")

    weights = item_weights(train_set, config.source_balance)
    model = build_model(config, input_size, margin).to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    head = BlendMapHead(model.encoder).to(device) if config.blend_map else None
    if head is not None:  # its own group at the full rate, before the schedule reads the groups' rates
        optimizer.add_param_group({"params": list(head.parameters()), "lr": config.lr, "weight_decay": config.weight_decay})
    steps_per_epoch = math.ceil(len(train_set) / world / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=steps_per_epoch * config.epochs,
                                                    pct_start=min(0.3, 1 / config.epochs), anneal_strategy="cos")
    # EMA of weights and BatchNorm buffers; it is what is validated and saved when on
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay),
                                               use_buffers=True) if config.ema_decay else None)
    state: dict[str, Any] = {"epoch": 0, "best_auc": -1.0, "best_epoch": 0, "history": [], "train_seconds": 0.0}
    last_path = out_dir / "last.pt"
    if config.resume and last_path.exists():
        saved = torch.load(last_path, map_location="cpu", weights_only=False)
        check_resume(saved.get("config"), config, last_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if head is not None:
            head.load_state_dict(saved["blend_map_head"])
        state = saved["state"]
        if ema is not None:
            if saved.get("ema") is None:
                raise ValueError(f"{last_path} was trained without --ema-decay; resume it without, or start a new run")
            ema.load_state_dict(saved["ema"])
        log.warning("resuming from %s after epoch %d", last_path, state["epoch"])
    if distributed:
        model = ray.train.torch.prepare_model(model)
        if head is not None:
            head = ray.train.torch.prepare_model(head)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if epoch - state["best_epoch"] > config.patience and state["best_epoch"] > 0:
            log.warning("early stop: no validation AUC gain for %d epochs", config.patience)
            break
        started = time.time()
        torch.manual_seed(config.seed * 1000 + epoch)
        train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        draw = min(len(train_set), steps_per_epoch * config.batch_size * world)
        if config.paired:
            order = paired_order(train_set, weights, draw, generator)
        elif weights is None:
            order = torch.randperm(len(train_set), generator=generator).tolist()
        else:  # a weighted draw without replacement: every epoch a new, source-balanced subset
            order = torch.multinomial(weights, draw, replacement=False, generator=generator).tolist()
        # whole batches per worker, so a pair is not split between two workers
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        if len(batches) % world:  # every worker takes as many steps, or DDP's all-reduce waits forever on the last
            batches += batches[: world - len(batches) % world]
        shard = [i for batch in batches[rank::world] for i in batch][: steps_per_epoch * config.batch_size]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train_set, shard), batch_size=config.batch_size,
                                             shuffle=False, collate_fn=collate, drop_last=False)
        model.train()
        losses, map_losses = [], []
        for crops, labels, *maps in tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", disable=rank != 0, leave=False):
            pixels, labels = crops_to_tensor(crops, device), labels.to(device)

            def batch_loss() -> tuple[torch.Tensor, torch.Tensor | None]:
                with torch.autocast(device.type, enabled=use_amp):
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(pixels).float(), smooth(labels, config.label_smoothing))
                    map_loss = blend_map_loss(head(), maps[0].to(device), maps[1].to(device)) if head is not None else None
                    return (loss if map_loss is None else loss + config.blend_map * map_loss), map_loss

            loss, map_loss = batch_loss()
            if map_loss is not None:
                map_losses.append(float(map_loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            moves = ascend([p for g in optimizer.param_groups for p in g["params"]], config.sam_rho) if config.sam_rho else None
            if moves is not None:  # SAM: the step's gradient is the perturbed weights', applied to the original ones
                optimizer.zero_grad(set_to_none=True)
                with frozen_norm_stats(model):
                    scaler.scale(batch_loss()[0]).backward()
                descend(moves)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(_unwrap(model))
            losses.append(float(loss.detach()))
        shipped = _unwrap(model) if ema is None else ema.module
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)), **validate(shipped, val_set, device)}
        if map_losses:  # train_loss is the sum; this is the blend map's part, unweighted
            metrics["train_map_loss"] = float(np.mean(map_losses))
        state["train_seconds"] += time.time() - started
        metrics["seconds"] = round(time.time() - started, 1)
        state["history"].append(metrics)
        state["epoch"] = epoch
        improved = metrics.get("val_video_auc", -metrics["train_loss"]) > state["best_auc"]
        if improved:
            state["best_auc"] = metrics.get("val_video_auc", -metrics["train_loss"])
            state["best_epoch"] = epoch
        if rank == 0:
            log.warning("epoch %d: %s", epoch, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))
            if improved:
                save_checkpoint(shipped, _card(config, shipped.spec, state, manifest), out_dir / "best.safetensors")
            with replacing(last_path) as tmp:
                torch.save({"model": _unwrap(model).state_dict(), "ema": ema.state_dict() if ema is not None else None,
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state,
                            "blend_map_head": _unwrap(head).state_dict() if head is not None else None,
                            "config": config.model_dump(mode="json")}, tmp)
            (out_dir / "history.json").write_text(json.dumps(state["history"], indent=2))
        if distributed:
            ray.train.report(metrics)
    return state


@functools.lru_cache(maxsize=4)
def _init_record(path: Path) -> dict[str, str]:
    """Which weights a run started from, by version and content (a path means nothing elsewhere); read once per
    run, not at every best epoch."""
    return {"version": read_card(path).version, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def _card(config: TrainConfig, spec: ModelSpec, state: dict, manifest: dict) -> ModelCard:
    return ModelCard(
        version=config.version, architecture=spec,
        training={
            "dataset": config.data_description or str(config.dataset), "source": manifest.get("source"),
            "prepared": [str(config.dataset), *map(str, config.extra_datasets)], "splits": manifest.get("splits"),
            "hyperparameters": config.model_dump(mode="json", exclude={"dataset", "out_dir", "resume"}),
            "best_epoch": state["best_epoch"], "history": state["history"],
            "train_seconds": round(state["train_seconds"], 1),
            "hardware": f"{platform.machine()} {os.cpu_count()} CPU" + (", CUDA" if torch.cuda.is_available() and config.use_gpu else ""),
            **({"init": _init_record(config.init)} if config.init else {}),
        },
        metrics={"val_video_auc_mean_agg": state["best_auc"]},
    )


def train(config: TrainConfig) -> dict[str, Any]:
    """Single process, or data-parallel on Ray Train when ``config.num_workers`` > 0."""
    if not config.num_workers:
        return fit(config)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init()
    cpus = float(ray.cluster_resources().get("CPU", 1))
    per_worker = 1.0 if config.use_gpu else max(0.25, min(1.0, (cpus - 0.5) / config.num_workers))
    trainer = TorchTrainer(
        lambda cfg: fit(TrainConfig.model_validate(cfg), distributed=True),
        train_loop_config=config.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": per_worker}),
        run_config=RunConfig(name="deepfakestream-train", storage_path=str(Path(config.out_dir).resolve() / "ray")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return {"metrics": result.metrics, "history": json.loads((Path(config.out_dir) / "history.json").read_text())}
