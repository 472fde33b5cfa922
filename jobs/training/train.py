"""``deepfakestream train``: SRM-EfficientNet detector from a prepared crop dataset.

Reals come from the dataset's ``train`` split; fakes are self-blended images made on the fly from those
reals (and, with ``--real-fakes``, the split's manipulated videos too). Validation is video-level ROC
AUC on the ``val`` split (mean face score per video; it needs reals and fakes there, or no val crops at all,
when the last epoch is kept). Every epoch writes ``last.pt`` (full state, for ``--resume``); the best epoch is
written as ``best.safetensors`` + model card (a new run never over another's: ``--overwrite``). Seeds fix the data order,
the augmentations and dropout per epoch, so a resumed run continues exactly as an uninterrupted one.
Single process by default; ``num_workers > 0`` runs the same loop data-parallel under Ray Train. Its parts live
beside it: config.py (settings), cropset.py (crops, transforms, draws), build.py (network, optimiser), validate.py,
resume.py.
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
from typing import Any

import numpy as np
import torch

from jobs.training.blendmap import BlendMapHead, blend_map_loss
from jobs.training.build import build_model, build_optimizer, crop_geometry
from jobs.training.config import TrainConfig
from jobs.training.cropset import CropSet, collate, crop_rows, epoch_order, item_weights
from jobs.training.prepare import read_manifest
from jobs.training.resume import check_resume, claim_out_dir, read_last
from jobs.training.sam import ascend, descend, frozen_norm_stats
from jobs.training.validate import validate, validates
from pipeline.atomic import replacing, write_atomic
from pipeline.card import ModelCard, ModelSpec, read_card
from pipeline.checkpoint import save_checkpoint
from pipeline.errors import DeepfakeStreamError, DeviceUnavailableError
from pipeline.model import DeepfakeDetector
from pipeline.preprocess import crops_to_tensor

log = logging.getLogger(__name__)


def smooth(labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Label smoothing for a binary target: 0 -> eps/2, 1 -> 1 - eps/2 (eps = 0 leaves it be)."""
    return labels * (1 - eps) + eps / 2


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
        if config.use_gpu and not torch.cuda.is_available():  # refused as `score --device cuda` is: never CPU unsaid
            raise DeviceUnavailableError("--gpu asks for CUDA but no CUDA GPU is visible: leave out --gpu to train on the CPU")
        device = torch.device("cuda" if config.use_gpu else "cpu")
    out_dir = Path(config.out_dir)
    # data-parallel: train() refused before starting the workers; here each finds what to remove, rank 0 removes it
    start_afresh = claim_out_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(config.dataset)
    input_size, margin = crop_geometry([config.dataset, *config.extra_datasets])
    geometry = {"crop_size": input_size, "margin": margin}  # last.pt keeps it: a resume must crop alike

    train_rows = crop_rows(config.dataset, "train", config.max_crops_per_video)
    for extra in config.extra_datasets:
        train_rows += crop_rows(extra, "train", config.max_crops_per_video)
    train_set = CropSet(train_rows, config.sbi, config.real_fakes, config.seed, codec_p=config.codec_p,
                        cross_p=config.cross_p, capture_p=config.capture_p, parts_p=config.parts_p,
                        maps=bool(config.blend_map), mesh_p=config.mesh_p, local_p=config.local_p)
    val_rows = [r for d in [config.dataset, *config.extra_datasets] for r in crop_rows(d, "val", config.max_crops_per_video)]
    val_set = CropSet(val_rows, False, True, config.seed, train=False)
    log.warning("training on %d items (%d crops), validating on %d crops", len(train_set), len(train_rows), len(val_set))
    if not len(train_set):
        raise ValueError(f"no training crops in {config.dataset} (split 'train')")
    validated = validates(val_set, [config.dataset, *config.extra_datasets])
    if not validated:
        log.warning("no val crops: no early stopping, every epoch is saved as best.safetensors and the last one is kept")

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
        saved = read_last(last_path)
        check_resume(saved, config, last_path, geometry)
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
    if rank == 0:  # the inputs passed their checks: only now does another run's --overwrite'd folder go
        start_afresh()

    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if epoch - state["best_epoch"] > config.patience and state["best_epoch"] > 0:
            log.warning("early stop: no validation AUC gain for %d epochs", config.patience)
            break
        started = time.time()
        torch.manual_seed(config.seed * 1000 + epoch)
        train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        draw = min(len(train_set), steps_per_epoch * config.batch_size * world)
        order = epoch_order(train_set, weights, draw, config.paired, generator)
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
        improved = not validated or metrics["val_video_auc"] > state["best_auc"]
        if improved:
            state["best_epoch"] = epoch
            if validated:
                state["best_auc"] = metrics["val_video_auc"]
        if rank == 0:
            log.warning("epoch %d: %s", epoch, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))
            if improved:
                save_checkpoint(shipped, _card(config, shipped.spec, state, manifest, validated), out_dir / "best.safetensors")
            with replacing(last_path) as tmp:
                torch.save({"model": _unwrap(model).state_dict(), "ema": ema.state_dict() if ema is not None else None,
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state,
                            "blend_map_head": _unwrap(head).state_dict() if head is not None else None,
                            "config": config.model_dump(mode="json"), "crop_geometry": geometry}, tmp)
            write_atomic(out_dir / "history.json", json.dumps(state["history"], indent=2).encode())  # read by others mid-run
        if distributed:
            ray.train.report(metrics)
    return state


@functools.lru_cache(maxsize=4)
def _init_record(path: Path) -> dict[str, str]:
    """Which weights a run started from, by version and content (a path means nothing elsewhere); read once per
    run, not at every best epoch."""
    return {"version": read_card(path).version, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def _card(config: TrainConfig, spec: ModelSpec, state: dict, manifest: dict, validated: bool) -> ModelCard:
    return ModelCard(
        version=config.version, architecture=spec,
        training={
            "dataset": config.data_description or str(config.dataset), "source": manifest.get("source"),
            "prepared": [str(config.dataset), *map(str, config.extra_datasets)], "splits": manifest.get("splits"),
            "hyperparameters": config.model_dump(mode="json", exclude={"dataset", "out_dir", "resume", "overwrite"}),
            "best_epoch": state["best_epoch"], "history": state["history"],
            "selected_by": "val_video_auc" if validated else "last epoch (no validation crops)",
            "train_seconds": round(state["train_seconds"], 1),
            "hardware": f"{platform.machine()} {os.cpu_count()} CPU" + (", CUDA" if torch.cuda.is_available() and config.use_gpu else ""),
            **({"init": _init_record(config.init)} if config.init else {}),
        },
        metrics={"val_video_auc_mean_agg": state["best_auc"]} if validated else {},
    )


class TrainingFailedError(DeepfakeStreamError):
    """A data-parallel run failed on its workers."""

    code = "training_failed"


def train(config: TrainConfig) -> dict[str, Any]:
    """Single process, or data-parallel on Ray Train when ``config.num_workers`` > 0."""
    if not config.num_workers:
        return fit(config)
    claim_out_dir(config)  # a refusal here, not in the workers: there it would reach the caller as Ray's failure
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init()
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    if config.use_gpu and gpus < config.num_workers:  # Ray would wait forever for the GPUs its workers ask for
        raise DeviceUnavailableError(f"--gpu asks for a GPU for each of {config.num_workers} workers, and the Ray "
                                     f"cluster has {gpus:g}: fewer --num-workers, or leave out --gpu")
    per_worker = 1.0 if config.use_gpu else max(0.25, min(1.0, (cpus - 0.5) / config.num_workers))
    # the workers run in Ray's session folder: a relative path (the default -o runs/train) would point there
    config = config.model_copy(update={
        "dataset": config.dataset.resolve(), "out_dir": config.out_dir.resolve(),
        "extra_datasets": [p.resolve() for p in config.extra_datasets], "init": config.init.resolve() if config.init else None})
    trainer = TorchTrainer(
        lambda cfg: fit(TrainConfig.model_validate(cfg), distributed=True),
        train_loop_config=config.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": per_worker}),
        run_config=RunConfig(name="deepfakestream-train", storage_path=str(Path(config.out_dir).resolve() / "ray")),
    )
    try:
        result = trainer.fit()
        if result.error:
            raise result.error
    except Exception as exc:  # noqa: BLE001 - Ray's TrainingFailedError wraps the worker's: one line, the rest logged
        log.debug("Ray Train failed", exc_info=True)
        raise TrainingFailedError(f"Ray Train failed: {' '.join(str(exc).split())[:400]} (its trace is in the log with "
                                  f"DFS_LOG_LEVEL=DEBUG; checkpoints in {config.out_dir} are kept: --resume)") from exc
    return {"metrics": result.metrics, "history": json.loads((Path(config.out_dir) / "history.json").read_text())}
