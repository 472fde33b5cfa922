"""What to scan: every media object under a source prefix, with the version fingerprint incremental scans
compare, and the fsspec options to read it with."""

from __future__ import annotations

import fnmatch
import math
import os
import stat
from datetime import datetime, timezone
from typing import Any

import fsspec

from jobs.scan.errors import ScanError, SourceNotFoundError
from pipeline.errors import one_line
from pipeline.media import MEDIA_EXTENSIONS, normalize_uri


def storage_options_for(uri: str, endpoint_url: str | None = None, anon: bool = False,
                        profile: str | None = None) -> dict[str, Any]:
    """fsspec options for ``uri``. For s3:// the endpoint comes from the flag, else AWS_ENDPOINT_URL(_S3).

    Credentials found in the driver's environment are passed on explicitly, so Ray workers on other
    nodes (which may not share the driver's environment) read with the same identity.
    """
    protocol = fsspec.core.split_protocol(uri)[0]
    if protocol not in ("s3", "s3a"):
        return {}
    options: dict[str, Any] = {}
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    if anon:
        options["anon"] = True
    elif profile:
        options["profile"] = profile
    elif os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["token"] = os.environ["AWS_SESSION_TOKEN"]
    return options


def protocol(fs: fsspec.AbstractFileSystem) -> str:
    """A filesystem's main protocol (fsspec gives a string or a tuple of aliases)."""
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return protocol(fs) in ("file", "local")


def _epoch(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return math.nan
    return float(value)


def fingerprint(size: int, etag: str, mtime: float, generation: str = "", md5: str = "") -> str:
    """What identifies one version of an object's content: its GCS generation (or MD5) when it has one (a GCS
    ETag also changes when only the metadata does), else its ETag, else size + mtime."""
    if generation:
        return f"generation:{generation}"
    if md5:
        return f"md5:{md5}"
    if etag:
        return f"etag:{etag}"
    return f"size:{size}:mtime:{'none' if math.isnan(mtime) else f'{mtime:.6f}'}"


def object_entry(uri: str, info: dict[str, Any]) -> dict[str, Any]:
    etag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "").strip('"')
    mtime = _epoch(info.get("mtime") or info.get("LastModified") or info.get("updated")
                   or info.get("last_modified") or info.get("modified"))
    size = int(info.get("size") or info.get("Size") or 0)
    version = fingerprint(size, etag, mtime, str(info.get("generation") or ""), str(info.get("md5Hash") or ""))
    return {"uri": uri, "size": size, "etag": etag, "mtime": mtime, "fingerprint": version}


def _followed(path: str) -> dict[str, Any] | None:
    """Type, size and mtime of a path, a symlink's target's; None when it dangles (or loops on itself)."""
    try:
        target = os.stat(path)
    except OSError:
        return None
    kind = "file" if stat.S_ISREG(target.st_mode) else "directory" if stat.S_ISDIR(target.st_mode) else "other"
    return {"type": kind, "size": target.st_size, "mtime": target.st_mtime}


def _local_files(root: str) -> dict[str, dict[str, Any]]:
    """Path → info of every file under a local folder, symlinks followed as ``score`` follows them: to files, and
    into folders (fsspec's walk lists a link as "other" and goes no further). Each real folder is walked once, under
    the first path that reaches it, its own before any link's: a link loop, or a link to a folder already walked (a
    parent included), adds nothing. Unreadable folders are left out, as fsspec's walk leaves them."""
    files: dict[str, dict[str, Any]] = {}
    walked: set[str] = set()
    tops = [root]  # the folder, then the links to folders found under it, breadth first
    while tops:
        top = tops.pop(0)
        if os.path.realpath(top) in walked:
            continue
        walked.add(os.path.realpath(top))
        for folder, subfolders, names in os.walk(top):  # does not follow links: they are queued below
            kept = []
            for name in sorted(subfolders):
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    tops.append(path)
                elif os.path.realpath(path) not in walked:
                    walked.add(os.path.realpath(path))
                    kept.append(name)
            subfolders[:] = kept
            for name in names:
                path = os.path.join(folder, name)
                target = _followed(path)  # None: a dangling link, or a file gone since it was listed
                if target is not None:
                    files[path] = {"name": path, **target, "islink": os.path.islink(path)}
    return files


def list_objects(source: str, storage_options: dict[str, Any], extensions: tuple[str, ...] = MEDIA_EXTENSIONS,
                 include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every media object under ``source`` (a prefix, folder or single object), sorted by URI."""
    source = normalize_uri(source)  # `S3://b/x` and `s3://b/x` are one source (fsspec knows only the latter)
    try:
        fs, root = fsspec.core.url_to_fs(source, **storage_options)
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing fsspec backend, bad options
        raise ScanError(f"cannot open source {source}: {type(exc).__name__}: {exc}") from exc
    local = is_local(fs)
    root = os.path.abspath(root) if local else root.rstrip("/")
    fs.invalidate_cache()  # a long-lived process must see tonight's objects, not a cached listing
    try:
        if fs.isfile(root):
            infos = {root: fs.info(root)}
        else:
            infos = _local_files(root) if local else fs.find(root, detail=True, withdirs=False)
            # an object store has no empty prefixes, only keys: nothing under a prefix that is not even a
            # folder marker (`prefix/`) is a mistyped or removed source, not a quiet night
            if not infos and not fs.exists(root):
                raise SourceNotFoundError(f"source not found: {source} (no such folder, object or prefix)")
    except ScanError:
        raise
    except FileNotFoundError as exc:  # s3fs: no such bucket
        raise SourceNotFoundError(f"source not found: {source} ({one_line(exc, 200)})") from exc
    except Exception as exc:  # noqa: BLE001 - credentials, network, permissions
        raise ScanError(f"cannot list source {source}: {type(exc).__name__}: {exc}") from exc
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    entries = []
    for path, info in sorted(infos.items()):
        if local and info.get("islink"):  # a SOURCE that is itself a link to a file (links under it: _local_files)
            target = _followed(path)
            if target is None:
                continue
            info = {**info, **target}
        if info.get("type", "file") != "file":
            continue
        rel = path[len(root):].lstrip("/") or os.path.basename(path)
        name = os.path.basename(path)
        if suffixes and not name.lower().endswith(suffixes):
            continue
        if include and not any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in include):
            continue
        if exclude and any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in exclude):
            continue
        uri = path if local else fs.unstrip_protocol(path)
        entries.append(object_entry(uri, info))
    return entries
