"""One typed configuration for every front end: the model graph's sections here, the scan's (``scan:``,
``jobs/scan/config.py``) and the server's (``serve:``, ``serve/config.py``) kept with their code.

Precedence (highest first): CLI flags (passed as overrides) > environment (``DFS_`` prefix, ``__`` for
nesting, e.g. ``DFS_DECODE__NUM_FRAMES=16``) > a config file (YAML/JSON/TOML, ``--config`` or
``DFS_CONFIG``) > the defaults below. A key that names no setting is an error naming the key and its
source, never silently dropped.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.scan.config import ScanConfig
from serve.config import ServeConfig

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "detector.safetensors"
DEFAULT_ONNX_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deepfakestream" / "onnx"


class DecodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_frames: int = Field(32, ge=1, le=512, description="frames sampled evenly over the video")
    max_duration_s: float = Field(3600.0, gt=0, description="longer videos are refused")
    max_pixels: int = Field(4096 * 4096, gt=0, description="frames larger than this are refused")
    max_bytes: int = Field(4 * 1024**3, gt=0, description="larger objects are refused before reading")
    max_frames: int | None = Field(None, gt=0, description="videos with more frames are refused (from the header, else counted while demuxing); None = no limit")
    max_decoded_pixels: int | None = Field(
        None, gt=0, description="decoding work per object: frames decoded to reach the samples x their pixels (sparse "
                                "keyframes, containers without a seek index, animations on a big canvas); more is refused; "
                                "None = no limit (the server sets one: serve.max_decoded_pixels)")
    threads: int | None = Field(
        None, ge=0, description="decoder threads per video (pyav: frame threads); None = the process's torch_threads "
                                "(1 in a scan actor), 0 = one per core")
    backend: Literal["pyav", "decord"] = Field(
        "pyav", description="video decoder: pyav skips the frames nothing references unless sampled (same frames, "
                            "30-55% less decoding) and shows interlaced frames as one field; decord decodes every frame and "
                            "leaves fields woven (PyAV where decord is not installed, for MPEG-TS, which "
                            "decord cannot read from memory, and for streams whose frames decord cannot place in time: "
                            "no timestamps (AVI, MPEG-PS) or a trimmed lead-in)")


class DetectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detect_max_side: int = Field(640, ge=64, description="frames are downscaled to this long side for MTCNN")
    batch_size: int = Field(16, ge=1, description="frames per MTCNN call")
    detect_every: int = Field(4, ge=1, description="run MTCNN on every k-th sampled frame (and the last); the "
                              "frames between get the faces carried along their tracks (pipeline/keyframes.py)")
    min_face_px: int = Field(40, ge=8, description="faces smaller than this (original pixels) are dropped")
    first_pass_min_face_px: int | None = Field(
        80, ge=8, description="MTCNN first looks only for faces at least this large (its image pyramid starts at "
                              "the minimum face size, so small faces cost most of its work); frames where it finds "
                              "none are searched again down to min_face_px. None = one pass at min_face_px")
    min_probability: float = Field(0.90, ge=0, le=1)
    max_faces_per_frame: int = Field(4, ge=1)
    crop_size: int | None = Field(None, ge=32, description="crop side; None = the checkpoint's input size")
    margin: float | None = Field(None, ge=0, le=2, description="crop margin per side as a fraction of the box "
                                 "size; None = the checkpoint's (0.3 without a model)")
    track_iou: float = Field(0.3, gt=0, lt=1, description="IoU that links a face to a track")
    track_max_gap: int = Field(4, ge=0, description="sampled frames a track survives without a face")


class ClassifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: Path = DEFAULT_CHECKPOINT
    batch_size: int = Field(32, ge=1)
    threshold: float | None = Field(None, ge=0, le=1, description="override the model card's threshold")
    aggregation: Literal["mean", "confident", "track_max"] | None = Field(
        None, description="override the model card's aggregation strategy"
    )
    min_track_frames: int | None = Field(None, ge=1, description="override the card's minimum track length (sampled frames)")
    tta_flip: bool | None = Field(None, description="override the card's horizontal-flip test-time augmentation")
    runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="classifier engine: onnx (ONNX Runtime, CPU only), torch, or auto (onnx on CPU when installed)")
    onnx_cache: Path | None = Field(
        DEFAULT_ONNX_CACHE, description="folder of exported ONNX graphs, keyed by a hash of the weights, so a new "
                                        "process skips the ~3 s export; None = export every time")


class Settings(BaseSettings):
    """Everything the pipeline stages read."""

    model_config = SettingsConfigDict(env_prefix="DFS_", env_nested_delimiter="__", extra="forbid")

    device: str = Field("auto", description="cpu, cuda, cuda:N or auto")
    torch_threads: int = Field(0, ge=0, description="0 = leave torch's default")
    decode: DecodeConfig = DecodeConfig()
    detect: DetectConfig = DetectConfig()
    classify: ClassifyConfig = ClassifyConfig()
    serve: ServeConfig = ServeConfig()
    scan: ScanConfig = ScanConfig()

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, not {value!r}")


def _read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings tree; ``ValueError`` (one line for the user) when it is not a mapping of settings."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:  # not a ValueError: callers catch one kind of bad file
            raise ValueError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    elif path.suffix == ".toml":
        values = tomllib.loads(text)
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings (decode:, scan:, ...), "
                         f"not a {type(values).__name__}")
    return values


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _given(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` without its None leaves: null means "not given" there as a None flag does, so a ``gpus: null`` in
    a deploy config leaves ``DFS_SERVE__GPUS`` or the settings file in force."""
    return {k: _given(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}


def load_settings(config_file: Path | str | None = None, *, overrides_from: str = "command-line flags",
                  tree: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    """Build settings from file < environment < overrides: ``tree`` (nested, as in a file) and dotted keys like
    ``decode.num_frames`` (None: not given). ``overrides_from`` names them in the error for an unknown key."""
    config_file = config_file or os.environ.get("DFS_CONFIG")
    file_values = _read_config_file(Path(config_file)) if config_file else {}
    check_keys(file_values, f"config file {config_file}")
    check_environment()
    env_values = Settings().model_dump(exclude_unset=True)  # only what the environment set
    nested: dict[str, Any] = _given(tree or {})
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = nested
        *parents, leaf = dotted.replace("__", ".").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    check_keys(nested, overrides_from)
    merged = _deep_merge(_deep_merge(file_values, env_values), nested)
    return Settings.model_validate(merged)


class UnknownSettingError(ValueError):
    """A key that names no setting: without this a typo (``num_frame``) would be dropped silently."""


# DFS_* variables that are not settings (read by the CLI, the tests and the manifests' checks)
NOT_SETTINGS = frozenset({"DFS_CONFIG", "DFS_LOG_LEVEL", "DFS_SHARED_DATA", "DFS_KUBERAY_SCHEMAS"})


def unknown_key(path: list[str], model: type[BaseModel] | None = None) -> str | None:
    """The dotted prefix of ``path`` that names no field of ``model`` (``Settings``), or None if it is known.
    Below a free dict (``storage_options``) every key is the dict's own; below a plain value none is known."""
    model = model or Settings
    if not path or not all(path):
        return ".".join(path) or "(empty)"  # ``DFS_`` alone, or ``DFS_DECODE____X``
    for depth, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return ".".join(path[: depth + 1])
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            below = depth + 1 < len(path)
            return ".".join(path[: depth + 2]) if below and get_origin(field.annotation) is not dict else None
        model = field.annotation
    return None


def _leaf_paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[list[str]]:
    paths = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        paths.extend(_leaf_paths(value, path) if isinstance(value, dict) and value else [list(path)])
    return paths


def check_keys(values: dict[str, Any], source: str) -> None:
    """Refuse (one line, naming the key and ``source``) any key of ``values`` that is not a setting."""
    for path in _leaf_paths(values):
        bad = unknown_key(path)
        if bad:
            raise UnknownSettingError(f"unknown setting {bad!r} in {source}")


def check_environment(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse ``DFS_*`` variables that name no setting (e.g. ``DFS_DECODE__NUM_FRAME``)."""
    for name in sorted(environ):
        if name.upper().startswith("DFS_") and name.upper() not in NOT_SETTINGS:
            bad = unknown_key(name[4:].lower().split("__"))
            if bad:
                raise UnknownSettingError(f"unknown setting {bad!r} in environment variable {name}")


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from pipeline.errors import DeviceUnavailableError

        raise DeviceUnavailableError(f"device {device!r} requested but no CUDA GPU is visible (set device: cpu or auto)")
    return device


def set_torch_threads(threads: int) -> None:
    """torch's intra-op threads for this process (0 leaves torch's default): model stages call it when built."""
    if threads and threads > 0:
        import torch

        torch.set_num_threads(threads)
