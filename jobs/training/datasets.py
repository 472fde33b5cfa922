"""Labelled video sets in the three layouts people have, and identity-safe splits.

Layouts (``load_labelled_videos`` detects which):
- a labels CSV: ``path,label[,method,group]`` (``ids`` like ``033_097`` is read as the group's identities);
- DFDC: folders with ``metadata.json`` mapping file → {label: REAL|FAKE, original};
- FaceForensics++: ``original_sequences/**.mp4`` and ``manipulated_sequences/<method>/**.mp4``.

Splits are made over *identity groups*: every identity that appears together in a fake (target and
source of a swap) lands in the same split, so no face is seen in training and validated on. Without an ``ids``
or ``group`` column, identities are read from file names only where the names are a known dataset's
(``_ids_from_stem``); any other file is its own group.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.media import MEDIA_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass
class LabelledVideo:
    path: str
    label: str  # REAL or FAKE
    method: str = "unknown"
    identities: list[str] = field(default_factory=list)
    group: str = ""
    split: str = ""  # preassigned split (labels CSV ``split`` column); empty = by identity group

    @property
    def target(self) -> int:
        return int(self.label == "FAKE")


# the identity tokens of known datasets' file names: FaceForensics++ "000" (a YouTube original), "000_003" (its swap
# with 003), DeepFakeDetection's "01__exit_phone_room" and "01_02__exit_phone_room__HASH" (after "__" the scene,
# no person); Celeb-DF "id0_0000" (a clip of id0), "id0_id1_0000" (id0 swapped with id1)
_NAMED_IDS = (re.compile(r"(\d{2,3})(?:_(\d{2,3}))?(?:__.*)?"), re.compile(r"(id\d+)(?:_(id\d+))?_\d+"))


def _ids_from_stem(stem: str) -> list[str]:
    """Identities in a file name of a known layout; none for any other name (a photo's "10_1_0_2017…", a
    "clip_001"): its words are no people, and joining files by them put whole datasets in one group."""
    for pattern in _NAMED_IDS:
        match = pattern.fullmatch(stem)
        if match:
            return [i for i in match.groups() if i]
    return []


def _split_ids(ids: str) -> list[str]:
    """A labels CSV's ``ids`` column: the identities it names, ``_``-separated."""
    return [part for part in ids.split("_") if part]


def read_json(path: Path) -> object:
    """A JSON file's value; a file that is not JSON is a ``ValueError`` naming it."""
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not JSON ({exc})") from exc


def _read_csv(path: Path) -> list[LabelledVideo]:
    """Rows of a labels CSV (columns ``path`` and ``label``, optionally ``method``, ``ids``, ``group``, ``split``);
    a malformed file is a ``ValueError`` naming the file and line, never a KeyError. A file listed twice alike
    counts once; listed twice differently (another label or split) it is refused: which row holds?"""
    try:
        return _read_csv_rows(path)
    except (UnicodeDecodeError, csv.Error) as exc:  # a binary or UTF-16 file, a NUL byte
        raise ValueError(f"{path}: not a UTF-8 labels CSV ({exc})") from exc


def _read_csv_rows(path: Path) -> list[LabelledVideo]:
    videos = []
    seen: dict[str, tuple[int, LabelledVideo]] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: a labels CSV needs the columns path and label; missing {', '.join(sorted(missing))}")
        for row in reader:
            if not row["path"] or row["label"] is None:
                raise ValueError(f"{path} line {reader.line_num}: every row needs a path and a label")
            label = row["label"].strip().upper()
            if label not in ("REAL", "FAKE"):
                raise ValueError(f"{path}: label must be REAL or FAKE, got {row['label']!r} for {row['path']}")
            file_path = row["path"] if "://" in row["path"] else str((path.parent / row["path"]).resolve())
            ids = _split_ids(row["ids"]) if row.get("ids") else _ids_from_stem(Path(row["path"]).stem)
            method = row.get("method") or ("original" if label == "REAL" else "unknown")
            video = LabelledVideo(file_path, label, method, ids, row.get("group") or "", row.get("split") or "")
            if file_path in seen:
                line, first = seen[file_path]
                if first != video:
                    raise ValueError(f"{path}: {row['path']} is listed twice, differently: line {line} "
                                     f"({_describe(first)}) and line {reader.line_num} ({_describe(video)})")
                continue
            seen[file_path] = (reader.line_num, video)
            videos.append(video)
    return videos


def _describe(video: LabelledVideo) -> str:
    return f"{video.label}, {video.method}, group {video.group or '-'}, split {video.split or 'by group'}"


def _read_dfdc(root: Path) -> list[LabelledVideo]:
    videos = []
    for metadata in sorted(root.rglob("metadata.json")):
        entries = read_json(metadata)
        if not isinstance(entries, dict):
            raise ValueError(f"{metadata}: not a DFDC metadata.json (a JSON object of file → label)")
        for name, info in entries.items():
            if not isinstance(info, dict) or str(info.get("label", "")).upper() not in ("REAL", "FAKE"):
                raise ValueError(f"{metadata}: entry {name!r} needs a label REAL or FAKE")
            label = str(info["label"]).upper()
            original = info.get("original") or name
            ids = [Path(name).stem] if label == "REAL" else [Path(original).stem]
            videos.append(LabelledVideo(str(metadata.parent / name), label, "original" if label == "REAL" else "dfdc", ids))
    return videos


def _read_ffpp(root: Path) -> list[LabelledVideo]:
    videos = []
    for path in sorted((root / "original_sequences").rglob("*")):
        if path.suffix.lower() in MEDIA_EXTENSIONS:
            videos.append(LabelledVideo(str(path), "REAL", "original", _ids_from_stem(path.stem)))
    manipulated = root / "manipulated_sequences"
    for method_dir in sorted(p for p in manipulated.iterdir() if p.is_dir()):
        for path in sorted(method_dir.rglob("*")):
            if path.suffix.lower() in MEDIA_EXTENSIONS:
                videos.append(LabelledVideo(str(path), "FAKE", method_dir.name, _ids_from_stem(path.stem)))
    return videos


def load_labelled_videos(source: Path | str) -> list[LabelledVideo]:
    """Read any supported layout; assigns identity groups where the layout did not give them."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        videos = _read_csv(source)
    elif source.is_dir() and (source / "labels.csv").exists():
        videos = _read_csv(source / "labels.csv")
    elif source.is_dir() and (source / "original_sequences").is_dir():
        videos = _read_ffpp(source)
    elif source.is_dir() and any(source.rglob("metadata.json")):
        videos = _read_dfdc(source)
    else:
        raise ValueError(f"{source}: not a labels CSV, a DFDC folder (metadata.json) or a FaceForensics++ folder")
    if not videos:
        raise ValueError(f"{source}: no labelled videos found")
    assign_identity_groups(videos)
    return videos


def assign_identity_groups(videos: list[LabelledVideo]) -> None:
    """Union-find over identities that co-occur in one video; an explicit group is kept as given."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for video in videos:
        ids = video.identities or [Path(video.path).stem]
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    for video in videos:
        if not video.group:
            video.group = find((video.identities or [Path(video.path).stem])[0])


def split_by_group(videos: list[LabelledVideo], fractions: dict[str, float], seed: int = 0) -> dict[str, list[LabelledVideo]]:
    """Assign whole identity groups to splits (deterministic for a seed), sizes close to ``fractions``.

    Videos with a preassigned ``split`` (e.g. extra real footage meant for training only) go there.
    """
    fixed = {name: [v for v in videos if v.split == name] for name in fractions}
    unknown = {v.split for v in videos if v.split and v.split not in fractions}
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)} in labels; expected {sorted(fractions)}")
    videos = [v for v in videos if not v.split]
    _warn_one_group(videos)
    groups = sorted({v.group for v in videos}, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    random.Random(seed).shuffle(groups)
    names = list(fractions)
    total = sum(fractions.values())
    bounds, acc = [], 0.0
    for name in names:
        acc += fractions[name] / total
        bounds.append(round(acc * len(groups)))
    assignment = {}
    start = 0
    for name, end in zip(names, bounds):
        for group in groups[start:end]:
            assignment[group] = name
        start = end
    return {name: fixed[name] + [v for v in videos if assignment[v.group] == name] for name in names}


def _warn_one_group(videos: list[LabelledVideo]) -> None:
    """Say so when one identity group holds most of the videos to split: they all land in one split."""
    if len(videos) < 4:
        return
    group, n = Counter(v.group for v in videos).most_common(1)[0]
    if n > len(videos) / 2:
        log.warning("identity group %r holds %d of the %d videos split by group: they all land in one split (check the "
                    "identities that join them; a labels CSV may give a group column)", group, n, len(videos))


DEFAULT_SPLIT = {"train": 0.5, "val": 0.25, "test": 0.25}
