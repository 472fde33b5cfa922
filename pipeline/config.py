"""One typed configuration for every front end: the model graph's sections here, the scan's (``scan:``,
``jobs/scan/config.py``) and the server's (``serve:``, ``serve/config.py``) kept with their code.

Precedence (highest first): CLI flags (passed as overrides) > environment (``DFS_`` prefix, ``__`` for
nesting, e.g. ``DFS_DECODE__NUM_FRAMES=16``; lists and mappings as JSON) > a config file (YAML/JSON/TOML by its
extension, ``--config`` or ``DFS_CONFIG``) > the defaults below. ``load_settings`` merges the sources into one
tree and validates it once, so rules across fields see the merged values. A key that names no setting is an
error naming the key and its source, never silently dropped; a bad value's error names its source too.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
import tomllib
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Mapping, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.scan.config import ScanConfig
from pipeline.aggregate import Strategy
from serve.config import ServeConfig

Runtime = Literal["auto", "torch", "onnx"]  # the classifier's engine (pipeline/runtime.py)
DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "detector.safetensors"


def temp_onnx_cache() -> Path:
    """This user's ONNX cache under the temp dir: where there is no home, or the configured cache cannot be
    written. Used only once ``pipeline/runtime.py`` has found its parent this user's alone."""
    return Path(tempfile.gettempdir()) / f"deepfakestream-{os.geteuid()}" / "onnx"


def default_onnx_cache() -> Path | None:
    """XDG_CACHE_HOME, else ~/.cache, else (HOME unset and a uid without a passwd entry: a container's) the temp dir's
    ``temp_onnx_cache``, else (no writable temp dir either) None, no cache. Resolved when settings are built, not at
    import, and never fails: ``query`` and ``report`` never need it."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = Path.home() / ".cache"
        except RuntimeError:  # "Could not determine home directory"
            try:
                return temp_onnx_cache()
            except OSError:  # gettempdir: "No usable temporary directory found"
                return None
    return Path(base) / "deepfakestream" / "onnx"


class DecodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_frames: int = Field(32, ge=1, le=512, description="frames sampled evenly over the video")
    max_duration_s: float = Field(3600.0, gt=0, description="longer videos are refused")
    max_pixels: int = Field(4096 * 4096, gt=0, description="video frames and animations larger than this are refused; a photo up to 16x larger (a JPEG; 6x and at most 50 MP any other format) is scaled down to it (pipeline/images.py)")
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
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    checkpoint: Path = DEFAULT_CHECKPOINT
    batch_size: int = Field(32, ge=1)
    threshold: float | None = Field(None, ge=0, le=1, description="override the model card's threshold")
    aggregation: Strategy | None = Field(
        None, description="override the model card's aggregation strategy"
    )
    min_track_frames: int | None = Field(None, ge=1, description="override the card's minimum track length (sampled frames)")
    tta_flip: bool | None = Field(None, description="override the card's horizontal-flip test-time augmentation")
    runtime: Runtime = Field(
        "auto", description="classifier engine: onnx (ONNX Runtime, CPU only), torch, or auto (onnx on CPU when installed)")
    onnx_cache: Path | None = Field(
        default_factory=default_onnx_cache,
        description="folder of exported ONNX graphs, keyed by a hash of the weights, so a new process skips the ~3 s "
                    "export (default: $XDG_CACHE_HOME or ~/.cache, then deepfakestream/onnx; no home: under the temp "
                    "dir); None (also \"\" or \"none\", as the environment can only say it) = export every time")

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _check_checkpoint(cls, value: Any) -> Any:
        if str(value).strip() in ("", "."):  # Path("") is Path("."): the current directory, never a checkpoint
            raise ValueError("classify.checkpoint must name a .safetensors file, not be blank")
        return value

    @field_validator("onnx_cache", mode="before")
    @classmethod
    def _no_cache(cls, value: Any) -> Any:
        # blank would be Path("."): graphs dropped into the current directory
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value


class Settings(BaseSettings):
    """Everything the pipeline stages read."""

    # the environment here serves direct construction (``Settings()``, tests); ``load_settings`` reads it itself
    model_config = SettingsConfigDict(env_prefix="DFS_", env_nested_delimiter="__", extra="forbid", allow_inf_nan=False)

    device: str = Field("auto", description="cpu, cuda, cuda:N or auto")
    torch_threads: int = Field(0, ge=0, description="0 = leave torch's default")
    decode: DecodeConfig = DecodeConfig()
    detect: DetectConfig = DetectConfig()
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)  # its onnx_cache: resolved when built
    serve: ServeConfig = ServeConfig()
    scan: ScanConfig = ScanConfig()

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, not {value!r}")


FORMATS = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON", ".toml": "TOML"}  # by extension, any case


def _read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings tree; ``ValueError`` (one line naming the file) when it is not a mapping of settings."""
    import yaml

    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"config file {path}: unknown format {path.suffix or '(no extension)'!r}; "
                         f"name it {', '.join(FORMATS)}")
    try:
        text = path.read_text()
        if kind == "YAML":
            values = yaml.safe_load(text) or {}
        elif kind == "TOML":
            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:  # decode and parse errors; YAMLError is no ValueError
        raise ValueError(f"config file {path} is not valid {kind}: {' '.join(str(exc).split())}") from exc
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


def _nest(path: list[str], value: Any, into: dict[str, Any] | None = None) -> dict[str, Any]:
    """``value`` at ``path`` (``["decode", "num_frames"]``) in the tree ``into`` (a new one by default)."""
    tree = into if into is not None else {}
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return tree


def _annotation_at(path: list[str]) -> Any:
    """The type of the setting at a known ``path``; None below a free dict (its keys' values are text)."""
    model: type[BaseModel] | None = Settings
    annotation = None
    for part in path:
        if model is None:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return annotation


def _json_example(annotation: Any) -> str | None:
    """How to write ``annotation`` in the environment when it must be JSON (lists, mappings, sections), else None."""
    arms = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    for arm in arms:
        kind = get_origin(arm) or arm
        if isinstance(kind, type) and issubclass(kind, (list, tuple, set, frozenset)):
            return """a JSON list, e.g. '["a", "b"]'"""
        if isinstance(kind, type) and issubclass(kind, (dict, BaseModel)):
            return """a JSON object, e.g. '{"key": "value"}'"""
    return None


def _environment_settings(environ: Mapping[str, str] = os.environ) -> list[tuple[dict[str, Any], str]]:
    """One (tree, source) per ``DFS_*`` setting variable, sorted by name so ``DFS_SERVE__PORT`` lands over a whole
    ``DFS_SERVE`` object. Values stay text for the settings to parse, but lists, mappings and sections are JSON.
    A variable that names no setting (``DFS_DECODE__NUM_FRAME``) is refused."""
    trees = []
    for name in sorted(environ):
        if not name.upper().startswith("DFS_") or name.upper() in NOT_SETTINGS:
            continue
        path, value = name[4:].lower().split("__"), environ[name]
        bad = unknown_key(path)
        if bad:
            raise UnknownSettingError(f"unknown setting {bad!r} in environment variable {name}")
        expected = _json_example(_annotation_at(path))
        if expected:
            try:
                value = json.loads(value)
            except ValueError as exc:  # the value itself is not quoted: it may hold credentials (storage_options)
                raise ValueError(f"environment variable {name} must be {expected}: {exc}") from None
        trees.append((_nest(path, value), f"environment variable {name}"))
    return trees


def _attributed(exc: ValidationError, sources: dict[tuple[str, ...], str]) -> ValidationError:
    """``exc`` with each error's source (a file, a variable, the flags) added to its message: the sources of the
    longest given prefix of its location, or of every value given below it (a rule across a section's fields)."""
    errors = []
    for error in exc.errors():
        loc = tuple(map(str, error["loc"]))
        where = next((sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), None)
        named = [where] if where else sorted({s for path, s in sources.items() if path[: len(loc)] == loc})
        message = error["msg"] + (f" (from {', '.join(named)})" if named else "")
        errors.append({"type": PydanticCustomError(error["type"], "{message}", {"message": message}),
                       "loc": error["loc"], "input": error["input"]})
    return ValidationError.from_exception_data(exc.title, errors)


def load_settings(config_file: Path | str | None = None, *, overrides_from: str = "command-line flags",
                  tree: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    """Build settings from file < environment < overrides: ``tree`` (nested, as in a file) and dotted keys like
    ``decode.num_frames`` (None: not given). ``overrides_from`` names them in the error for an unknown key.
    The sources are merged first and validated once."""
    config_file = config_file or os.environ.get("DFS_CONFIG")
    file_values = _read_config_file(Path(config_file)) if config_file else {}
    check_keys(file_values, f"config file {config_file}")
    nested: dict[str, Any] = _given(tree or {})
    for dotted, value in overrides.items():
        if value is not None:
            _nest(dotted.replace("__", ".").split("."), value, into=nested)
    check_keys(nested, overrides_from)
    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}  # where each given value came from, for the errors
    for values, source in [(file_values, f"config file {config_file}"), *_environment_settings(), (nested, overrides_from)]:
        merged = _deep_merge(merged, values)
        sources.update((tuple(path), source) for path in _leaf_paths(values))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise _attributed(exc, sources) from None


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


def resolve_device(device: str, ray_gpus: list | None = None) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is visible, else ``cpu``. A process that Ray gave a GPU (``ray_gpus``;
    None: ``ray.get_gpu_ids()``) where torch sees none still runs, on the CPU, and says why in a warning."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        granted = _ray_gpu_ids() if ray_gpus is None else ray_gpus
        if granted:
            _say_gpu_unseen(",".join(map(str, granted)), torch.version.cuda, os.environ.get("CUDA_VISIBLE_DEVICES"))
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from pipeline.errors import DeviceUnavailableError

        raise DeviceUnavailableError(f"device {device!r} requested but no CUDA GPU is visible (set device: cpu or auto)")
    return device


def _ray_gpu_ids() -> list:
    """The GPUs Ray gave this process (an actor or task that asked for a GPU share); [] outside a Ray worker."""
    ray = sys.modules.get("ray")  # never imported here: a process Ray started has it loaded
    if ray is None or not ray.is_initialized():
        return []
    try:
        return list(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - only a warning depends on it
        return []


@functools.cache  # once per process: the detector and the classifier both resolve their device
def _say_gpu_unseen(ids: str, cuda: str | None, visible: str | None) -> None:
    logging.getLogger(__name__).warning(
        "Ray gave this process GPU %s but torch sees no CUDA device (%s, CUDA_VISIBLE_DEVICES=%s): the models run "
        "on the CPU, many times slower. Likely a CPU-only image in the GPU group, an NVIDIA driver older than torch's "
        "CUDA, or a GPU declared that is not there (--num-gpus); device: cpu runs on the CPU on purpose",
        ids, f"torch built for CUDA {cuda}" if cuda else "a CPU-only torch build", visible)


def set_torch_threads(threads: int) -> None:
    """torch's intra-op threads for this process (0 leaves torch's default): model stages call it when built."""
    if threads and threads > 0:
        import torch

        torch.set_num_threads(threads)
