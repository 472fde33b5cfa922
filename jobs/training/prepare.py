"""``deepfakestream prepare``: labelled videos → a face-crop dataset, through the pipeline's own stages.

Output folder: one Parquet file per video (``crops/<split>/<video-hash>.parquet``, written to a temp name
then renamed, so an interrupted run resumes where it stopped) plus ``manifest.json``. Each row is one
face crop (PNG bytes, lossless) with its video, label, method, identity group, split, frame, track and
the face box and 5 landmarks in crop coordinates (what self-blending needs). Each file also records what its
video was listed as (label, method, group, split), so a rerun after the labels changed cuts that video again,
and the files of videos no longer listed in a split are removed: the folder always follows the labels.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jobs.training.datasets import DEFAULT_SPLIT, LabelledVideo, load_labelled_videos, read_json, split_by_group
from pipeline.atomic import replacing, write_atomic
from pipeline.batch import object_column
from pipeline.config import Settings
from pipeline.crop import DEFAULT_CROP_SIZE, DEFAULT_MARGIN, crop_transform
from pipeline.errors import DeepfakeStreamError
from pipeline.graph import stage_specs

log = logging.getLogger(__name__)

CROP_SCHEMA = pa.schema([
    ("video", pa.string()), ("label", pa.string()), ("method", pa.string()), ("group", pa.string()),
    ("split", pa.string()), ("frame", pa.int32()), ("timestamp", pa.float32()), ("track", pa.int32()),
    ("det_prob", pa.float32()), ("box", pa.list_(pa.float32(), 4)), ("landmarks", pa.list_(pa.float32(), 10)),
    ("crop_png", pa.binary()),
])


# a crop file's Parquet metadata key: what its video was listed as when it was cut (listed_as)
LISTED_AS = b"deepfakestream.listed_as"


class NothingCroppedError(DeepfakeStreamError, ValueError):
    """``prepare`` cut no face at all: every input failed or held no face (a wrong path column, a wrong folder)."""

    code = "nothing_cropped"


def video_key(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def listed_as(video: LabelledVideo, split: str) -> dict:
    """What a video's crop rows say of it besides the crops: when the labels change it, its crops are stale."""
    return {"label": video.label, "method": video.method, "group": video.group, "split": split}


def _cut_as(target: Path) -> dict | None:
    """What an existing crop file was cut for; a file of an older prepare says it in its rows only (None when empty)."""
    recorded = (pq.read_metadata(target).metadata or {}).get(LISTED_AS)
    if recorded:
        return json.loads(recorded)
    rows = pq.read_table(target, columns=["label", "method", "group", "split"]).slice(0, 1).to_pylist()
    return rows[0] if rows else None


def encode_png(crop: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def crop_rows(video: LabelledVideo, split: str, row: dict, crop_size: int, margin: float, main_track_only: bool) -> pa.Table:
    """Face rows of one detected video; fakes keep only their main track (other faces there are real)."""
    tracks = np.asarray(row["face_track"])
    keep = np.ones(len(tracks), bool)
    if main_track_only and len(tracks):
        keep = tracks == np.bincount(tracks).argmax()
    frame_shape = (int(row["height"]), int(row["width"]))
    boxes, landmarks = [], []
    for box, points in zip(row["face_boxes"][keep], row["face_landmarks"][keep]):
        _, transform = crop_transform(frame_shape, box, crop_size, margin)
        boxes.append(transform.apply(np.asarray(box).reshape(2, 2)).reshape(4).tolist())
        landmarks.append(transform.apply(points).reshape(10).tolist())
    n = int(keep.sum())
    columns = {
        "video": [video.path] * n, "label": [video.label] * n, "method": [video.method] * n,
        "group": [video.group] * n, "split": [split] * n,
        "frame": np.asarray(row["frame_indices"])[np.asarray(row["face_frame"])[keep]].astype(np.int32),
        "timestamp": np.asarray(row["timestamps"])[np.asarray(row["face_frame"])[keep]].astype(np.float32),
        "track": tracks[keep].astype(np.int32), "det_prob": np.asarray(row["face_probs"])[keep].astype(np.float32),
        "box": boxes, "landmarks": landmarks, "crop_png": [encode_png(c) for c in np.asarray(row["crops"])[keep]],
    }
    return pa.table(columns, schema=CROP_SCHEMA)


def write_table(table: pa.Table, path: Path) -> None:
    with replacing(path) as tmp:
        pq.write_table(table, tmp)


def pin_geometry(settings: Settings, crop_size: int | None = None) -> Settings:
    """Settings with an explicit crop size and margin: crops for training must not follow whichever checkpoint
    is installed (None in the settings means the card's). Crop size: ``crop_size`` (the flag) > the settings'
    ``detect.crop_size`` > a new model's input size (``ModelSpec``'s); margin: the settings' > ``ModelSpec``'s."""
    crop_size = crop_size or settings.detect.crop_size or DEFAULT_CROP_SIZE
    margin = DEFAULT_MARGIN if settings.detect.margin is None else settings.detect.margin
    return settings.model_copy(update={"detect": settings.detect.model_copy(update={"crop_size": crop_size, "margin": margin})})


class VideoCropper:
    """Decode → Detect (the pipeline's stages) → crop rows written per video. Usable as a Ray actor."""

    def __init__(self, settings: Settings, crop_size: int | None, out_dir: Path, frames_real: int, frames_fake: int):
        # the graph's prefix decode → detect; DFS_TORCH_THREADS reaches the detector (parallel prepares on few
        # cores must not oversubscribe)
        self.settings = settings = pin_geometry(settings, crop_size)
        self.crop_size = settings.detect.crop_size
        self.out_dir = Path(out_dir)

        def frames(n: int) -> Settings:
            return settings.model_copy(update={"decode": settings.decode.model_copy(update={"num_frames": n})})

        self.decode_real = stage_specs(frames(frames_real), "decode")[0].build()
        self.decode_fake = stage_specs(frames(frames_fake), "decode")[0].build()
        self.detect = stage_specs(settings, "detect")[-1].build()

    def process(self, video: LabelledVideo, split: str) -> dict:
        target = self.out_dir / "crops" / split / f"{video_key(video.path)}.parquet"
        wanted = listed_as(video, split)
        if target.exists():
            was = _cut_as(target)
            if was == wanted:
                return {"video": video.path, "split": split, "faces": pq.read_metadata(target).num_rows, "error": "", "skipped": True}
            log.warning("%s was cut as %s, is listed as %s now: cut again", video.path, was, wanted)
            target.unlink()  # first: should the new cut fail, no crop of the old label stays behind
        decode = self.decode_real if video.label == "REAL" else self.decode_fake
        batch = self.detect(decode({"uri": object_column([video.path])}))
        row = {k: v[0] for k, v in batch.items()}
        if row["error"]:
            log.warning("skipping %s: %s", video.path, row["error"])
            return {"video": video.path, "split": split, "faces": 0, "error": str(row["error"]), "skipped": False}
        table = crop_rows(video, split, row, self.crop_size, self.settings.detect.margin, main_track_only=video.label == "FAKE")
        write_table(table.replace_schema_metadata({LISTED_AS: json.dumps(wanted)}), target)
        return {"video": video.path, "split": split, "faces": table.num_rows, "error": "", "skipped": False}

    def __call__(self, batch: dict) -> dict:
        """Ray Data entry: rows carry a JSON-encoded LabelledVideo and its split."""
        results = [self.process(LabelledVideo(**json.loads(v)), s) for v, s in zip(batch["video"], batch["split"])]
        return {key: np.array([r[key] for r in results]) for key in results[0]} if results else {}


def prepare(source: Path | str, out_dir: Path | str, settings: Settings, crop_size: int | None = None, frames_real: int = 48,
            frames_fake: int = 16, split_fractions: dict[str, float] | None = None, seed: int = 0,
            use_ray: bool = False, limit: int | None = None) -> dict:
    """Build (or resume) the crop dataset; returns and writes the manifest. ``crop_size`` None: the settings'
    ``detect.crop_size``, else a new model's default input size (``pin_geometry``)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    settings = pin_geometry(settings, crop_size)
    crop_size = settings.detect.crop_size
    videos = load_labelled_videos(source)  # first: labels it refuses (or splits it cannot make) leave no prepare.json
    splits = split_by_group(videos, split_fractions or DEFAULT_SPLIT, seed)
    fresh = _same_settings(out_dir, {
        "source": _source_key(source), "crop_size": crop_size,
        "seed": seed, "frames_real": frames_real, "frames_fake": frames_fake,
        "split_fractions": split_fractions or DEFAULT_SPLIT, "detect": settings.detect.model_dump(mode="json")})
    # only once _same_settings passed (the crops are this source's); against every listed video, not --limit's
    # few: a smoke run keeps the other crops
    _remove_unlisted(out_dir, {(name, video_key(v.path)) for name, members in splits.items() for v in members})
    work = [(v, name) for name, members in splits.items() for v in members][: limit or None]
    if use_ray:
        results = _prepare_on_ray(work, settings, crop_size, out_dir, frames_real, frames_fake)
    else:
        cropper = VideoCropper(settings, crop_size, out_dir, frames_real, frames_fake)
        results = [cropper.process(v, s) for v, s in tqdm(work, desc="prepare", unit="video")]
    manifest = {
        "source": str(source), "crop_size": crop_size, "margin": settings.detect.margin, "seed": seed,
        "frames_real": frames_real, "frames_fake": frames_fake, "split_fractions": split_fractions or DEFAULT_SPLIT,
        # what was prepared: with --limit, only the first videos of the work list (a smoke run)
        "splits": {name: {"videos": len(m), "groups": sorted({v.group for v in m})}
                   for name, m in ((n, [v for v, s in work if s == n]) for n in splits)},
        "videos": [{**asdict(v), "split": s} for v, s in work],
        "results": results,
        "faces": int(sum(r["faces"] for r in results)),
        "failed": [r for r in results if r["error"]],
    }
    if not manifest["faces"]:  # no manifest either: the folder holds no dataset, and a rerun must not think it does
        (out_dir / "manifest.json").unlink(missing_ok=True)
        if fresh:  # nor, in a folder this run began, its settings: a corrected retry (another source, size) may run
            _forget(out_dir)
        failed = manifest["failed"]
        example = f" (e.g. {failed[0]['video']}: {failed[0]['error']})" if failed else ""
        raise NothingCroppedError(f"no face cropped from the {len(results)} videos of {source}: {len(failed)} could not be "
                                  f"read{example}, {len(results) - len(failed)} held no face")
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2, default=str).encode())
    return manifest


def _forget(out_dir: Path) -> None:
    """Undo a first run that cropped no face: its crop files (each a video's none) and its ``prepare.json``."""
    crops = out_dir / "crops"
    for path in crops.glob("*/*.parquet"):
        path.unlink()
    for folder in [*crops.glob("*"), crops]:
        with contextlib.suppress(OSError):  # only empty folders go
            folder.rmdir()
    (out_dir / PREPARED_WITH).unlink(missing_ok=True)


def _remove_unlisted(out_dir: Path, listed: set[tuple[str, str]]) -> None:
    """Delete the crop files of videos no longer listed in that split (moved to another, or gone from the labels):
    they would be trained or validated on under a split or label the labels no longer give them."""
    stale = sorted(f for f in (out_dir / "crops").glob("*/*.parquet") if (f.parent.name, f.stem) not in listed)
    for path in stale:
        path.unlink()
    if stale:
        log.warning("removed the crops of %d videos no longer listed in their split (%s)", len(stale),
                    ", ".join(str(p.relative_to(out_dir)) for p in stale[:5]) + (", ..." if len(stale) > 5 else ""))


PREPARED_WITH = "prepare.json"
# what a manifest says of the settings it was prepared with, under prepare.json's names (its margin: detect's)
MANIFEST_SETTINGS = ("source", "crop_size", "seed", "frames_real", "frames_fake", "split_fractions")


def _source_key(source: Path | str) -> str:
    """A source as the settings record it: a URI as given, a path absolute (resolved from where prepare runs)."""
    return str(source) if "://" in str(source) else str(Path(source).resolve())


def _manifest_settings(manifest: dict) -> dict:
    said = {k: manifest[k] for k in MANIFEST_SETTINGS if k in manifest}
    if "source" in said:  # as it was given, maybe relative: this folder's rerun must run from where the first did
        said["source"] = _source_key(said["source"])
    if "margin" in manifest:
        said["detect.margin"] = manifest["margin"]
    return said


def _same_settings(out_dir: Path, wanted: dict) -> bool:
    """A rerun resumes (videos already cropped as they are listed now are skipped), so it must crop as the first run
    did: another crop size would mix sizes under one manifest, another seed would move whole identity groups between
    splits, another source would leave every crop unlisted (``_remove_unlisted`` deletes them). The first run's
    settings are kept in ``prepare.json``; a folder prepared before that file was written is held to what its
    ``manifest.json`` says, and one with crops but neither file is refused. A rerun with other settings is refused.
    (Edits to the labels themselves are followed video by video: ``VideoCropper.process``, ``_remove_unlisted``.)
    True when the folder held no dataset yet (its first run: what it writes is all this run's)."""
    path, manifest = out_dir / PREPARED_WITH, out_dir / "manifest.json"
    fresh = False
    if path.exists():
        first, now, where = _json_object(path), wanted, path
    elif manifest.exists():
        first, where = _manifest_settings(read_manifest(out_dir)), manifest
        now = {k: wanted["detect"]["margin"] if k == "detect.margin" else wanted[k] for k in first}
    elif any((out_dir / "crops").glob("*/*.parquet")):
        raise ValueError(f"{out_dir} holds crops but neither {PREPARED_WITH} nor manifest.json says how they were "
                         "prepared: prepare into a new folder, or delete this one to start over")
    else:
        first, now, where, fresh = wanted, wanted, path, True
    changed = sorted(k for k in now.keys() | first.keys() if first.get(k) != now.get(k))
    if changed:
        raise ValueError(f"{out_dir} was prepared with other settings ({', '.join(changed)} differ; see {where}): "
                         "prepare into a new folder, or delete this one to start over")
    if not path.exists():  # a first run, or the first since prepare.json was kept: from now on all of it counts
        write_atomic(path, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode())
    return fresh


def _json_object(path: Path) -> dict:
    """A JSON object file of ours; anything else a ``ValueError`` naming it (never a bare parser message)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value


def read_manifest(dataset_dir: Path | str) -> dict:
    """A prepared dataset's ``manifest.json``: a ``ValueError`` naming it when it is damaged or not a manifest."""
    path = Path(dataset_dir) / "manifest.json"
    manifest = _json_object(path)
    if "crop_size" not in manifest:
        raise ValueError(f"{path}: not a prepared dataset's manifest (no crop_size); prepare the dataset again")
    return manifest


def _prepare_on_ray(work, settings, crop_size, out_dir, frames_real, frames_fake) -> list[dict]:
    import ray

    from jobs.training.resources import model_actor_resources

    items = [{"video": json.dumps(asdict(v)), "split": s} for v, s in work]
    resources = model_actor_resources()
    ds = ray.data.from_items(items).map_batches(
        VideoCropper, fn_constructor_args=(settings, crop_size, out_dir, frames_real, frames_fake),
        batch_size=1, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=resources["actors"]),
        num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], batch_format="numpy",
    )
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in ds.take_all()]


def load_crop_table(dataset_dir: Path | str, split: str | None = None) -> pa.Table:
    """All crop rows (optionally of one split) of a prepared dataset."""
    root = Path(dataset_dir) / "crops"
    files = sorted((root / split).glob("*.parquet") if split else root.glob("*/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no crops under {root}{'/' + split if split else ''}; run `deepfakestream prepare` first")
    return pa.concat_tables([pq.read_table(f, schema=CROP_SCHEMA) for f in files])
