"""``TrainConfig``: every setting of a training run, typed and checked once, unknown keys refused; the run's card
records it whole and ``--resume`` compares against it (resume.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, model_validator


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting must fail, not train with the default

    dataset: Path
    out_dir: Path
    extra_datasets: list[Path] = Field(default_factory=list, description="more prepared datasets: train split trained on, val split validated on")
    encoder: str = Field("tf_efficientnet_lite0", description="timm encoder: tf_efficientnet_lite0/1/2 (offline ImageNet weights from the train extra)")
    input_mode: Literal["srm", "rgb+srm", "rgb"] = Field("rgb+srm", description="rgb+srm, srm (noise residuals only) or rgb (no SRM filters)")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    sbi: bool = Field(True, description="self-blended pseudo-fakes from the reals")
    real_fakes: bool = Field(False, description="also train on the train split's manipulated videos")
    max_crops_per_video: int = Field(48, ge=1)
    patience: int = Field(3, ge=1, description="early stopping: epochs without validation AUC gain")
    seed: int = 0
    num_workers: int = Field(0, ge=0, description="0 = single process; N = Ray Train data-parallel workers")
    use_gpu: bool = Field(False, description="train on CUDA (mixed precision)")
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = default)")
    resume: bool = Field(False, description="continue from OUTPUT/last.pt")
    overwrite: bool = Field(False, description="start a new run in OUTPUT even though it holds another run's "
                            "last.pt or best.safetensors (removed once the new run's inputs pass, before its first epoch); without it that is refused")
    imagenet: bool = True
    init: FilePath | None = Field(None, description="start from this trained detector's weights (same encoder, input "
                              "mode, crop size and margin) instead of ImageNet's; e.g. to fine-tune a shipped soup")
    version: str = Field("dev", description="model version written to the card")
    data_description: str = Field("", description="what the data is and its terms, for the model card")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on batches per epoch (each epoch draws a new random subset)")
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
    local_p: float = Field(0.0, ge=0, le=1, description="share of self-blends confined to the mouth or the eyes "
                           "(sbi.part_mask), a reenactment's local seam instead of a swap's round the face; 0 = off")
    sam_rho: float = Field(0.0, ge=0, description="0 = off; else sharpness-aware minimisation: each step's gradient is "
                           "taken at the weights moved this far up the normalised gradient (SBI's optimiser; 2x a step's cost)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="0 = off; else targets move this far toward 0.5 "
                                   "(0 -> eps/2, 1 -> 1 - eps/2), so no crop is pushed to certainty; training only")
    source_balance: Literal["none", "sqrt"] = Field(
        "sqrt", description="sqrt: each source's share of an epoch grows with the square root of its size, so "
                            "thousands of photos cannot drown a few hundred video frames")

    @model_validator(mode="after")
    def _imagenet_weights_installed(self) -> TrainConfig:
        # said before any crop is decoded (minutes), not when the network is built after them
        if self.imagenet and self.init is None:
            from pipeline.errors import CheckpointError
            from pipeline.imagenet import lite_weights_path

            try:
                lite_weights_path(self.encoder)
            except CheckpointError as exc:
                raise ValueError(str(exc)) from exc
        return self
