"""What to scan: every media object under a source prefix, with the version fingerprint incremental scans
compare, and the fsspec options to read it with."""

from __future__ import annotations

import errno
import fnmatch
import logging
import math
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable

import fsspec

from jobs.scan.errors import ScanError, SourceNotFoundError
from pipeline.errors import one_line
from pipeline.logsafe import log_safe, redact_uri
from pipeline.media import MEDIA_EXTENSIONS, normalize_uri

log = logging.getLogger(__name__)

WARN_UNLISTED = 20  # things left out of a listing warned about by name; the rest only counted
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # a path that is not there (any more): nothing to list


def storage_options_for(uri: str, endpoint_url: str | None = None, anon: bool = False,
                        profile: str | None = None) -> dict[str, Any]:
    """fsspec options for ``uri``. For s3:// the endpoint comes from the flag, else AWS_ENDPOINT_URL(_S3).

    Credentials found in the driver's environment are passed on explicitly, so Ray workers on other
    nodes (which may not share the driver's environment) read with the same identity.
    """
    protocol = fsspec.core.split_protocol(uri)[0]
    if (protocol or "").lower() not in ("s3", "s3a"):  # S3://b/x is s3://b/x (normalize_uri), options included
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
    """Type, size and mtime of a path, a symlink's target's; None when it dangles (or loops on itself). Any other
    failure (EACCES: a folder that may be listed but not entered) raises: the file is there, unread."""
    try:
        target = os.stat(path)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    kind = "file" if stat.S_ISREG(target.st_mode) else "directory" if stat.S_ISDIR(target.st_mode) else "other"
    return {"type": kind, "size": target.st_size, "mtime": target.st_mtime}


def _printable(path: str) -> str:
    """A local path as a message may quote it: bytes that are not UTF-8 (os.fsdecode's surrogates) as ``\\xe9``."""
    return log_safe(path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


@dataclass
class Coverage:
    """What a listing vouches for (``list_objects`` fills it): an object it did not return is not there if it is under
    the source folder or prefix ``root`` (a URI as rows hold it), kept by the filters (``wanted``) and in no folder or
    file the listing could not read (``blocked``). It vouches for nothing until the listing has ended, nor for a
    single-object source (that object gone, the source is not found: the scan stops)."""

    root: str = ""
    single: bool = True
    blocked: list[str] = field(default_factory=list)  # paths of what could not be read, as URIs
    wanted: Callable[[str], bool] = lambda _uri: False

    def covers(self, uri: str) -> bool:
        if self.single or not uri.startswith(f"{self.root.rstrip('/')}/"):  # rstrip: a source of "/"
            return False
        if any(uri == b or uri.startswith(f"{b}/") for b in self.blocked):
            return False
        return self.wanted(uri)


def _unlisted(unlisted: list[str], what: str, why: str) -> None:
    """One thing under the source that cannot be listed: warned (the first few by name) and counted."""
    unlisted.append(what)
    if len(unlisted) <= WARN_UNLISTED:
        more = "; further ones are only counted" if len(unlisted) == WARN_UNLISTED else ""
        log.warning("not listed: %s (%s)%s", what, why, more)


def _wanted(root: str, suffixes: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...],
            path: str) -> bool:
    """Whether the filters keep ``path`` (under ``root``): its extension among ``suffixes`` (all, when none), then
    the globs, matched against its path under the source or its name."""
    rel = path[len(root):].lstrip("/") or os.path.basename(path)
    name = os.path.basename(path)
    if suffixes and not name.lower().endswith(suffixes):
        return False
    if include and not any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in include):
        return False
    return not (exclude and any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in exclude))


def _local_files(root: str, unlisted: list[str], wanted: Callable[[str], bool],
                 blocked: list[str]) -> dict[str, dict[str, Any]]:
    """Path → info of every file under a local folder, symlinks followed as ``score`` follows them: to files, and
    into folders (fsspec's walk lists a link as "other" and goes no further). Each real folder is walked once, under
    the first path that reaches it, its own before any link's: a link loop, or a link to a folder already walked (a
    parent included), adds nothing. A folder under ``root`` that cannot be read, and a file that cannot be looked at
    but that the filters (``wanted``) would keep, go to ``unlisted`` (fsspec's walk left them out without a word): a
    `notes.txt` seen but not looked at is no more missed than a readable one; their paths to ``blocked``, and a
    dangling link's (what was under it is not known to be gone). ``root`` itself unreadable raises."""
    files: dict[str, dict[str, Any]] = {}
    walked: set[str] = set()

    def refused(exc: OSError) -> None:  # os.walk's onerror: a folder it could not open or read through
        if exc.errno in _GONE:  # a folder deleted since it was seen holds nothing (a missing source: list_objects)
            return
        if exc.filename == root:
            raise exc  # the source itself unreadable: not a quiet night with nothing in it
        _unlisted(unlisted, _printable(str(exc.filename)), f"cannot read the folder: {exc.strerror}")
        blocked.append(str(exc.filename))

    tops = [root]  # the folder, then the links to folders found under it, breadth first
    while tops:
        top = tops.pop(0)
        if os.path.realpath(top) in walked:
            continue
        walked.add(os.path.realpath(top))
        for folder, subfolders, names in os.walk(top, onerror=refused):  # not following links: queued below
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
                try:
                    target = _followed(path)  # None: a dangling link, or a file gone since it was listed
                except OSError as exc:
                    if wanted(path):
                        _unlisted(unlisted, _printable(path), f"cannot look at the file: {exc.strerror}")
                        blocked.append(path)
                    continue
                if target is not None:
                    files[path] = {"name": path, **target}
                elif os.path.islink(path):  # dangling: an unmounted volume, a sync half done; nothing under it is gone
                    blocked.append(path)
    return files


def object_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI a listed ``path`` is read by, and stored under: a local path as it is; on Azure (adlfs, whose paths
    and URIs are ``container/key``, the account left out) ``abfs://container@account.dfs.core.windows.net/key``, the
    account the listing connected to, so that two accounts' containers of one name are two sources (adlfs takes
    the account back from that URI when the workers read it); elsewhere fsspec's own URI."""
    if is_local(fs):
        return path
    if protocol(fs) == "abfs":
        client = getattr(fs, "service_client", None)  # what it connected to (a connection string names its own)
        account = getattr(client, "account_name", None) or getattr(fs, "account_name", None)
        container, _, key = path.partition("/")
        if account and container:
            return f"abfs://{container}@{account}.dfs.core.windows.net/{key}"
    return fs.unstrip_protocol(path)


def list_objects(source: str, storage_options: dict[str, Any], extensions: tuple[str, ...] = MEDIA_EXTENSIONS,
                 include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                 unlisted: list[str] | None = None, coverage: Coverage | None = None) -> list[dict[str, Any]]:
    """Every media object under ``source`` (a prefix, folder or single object), sorted by URI.

    What under it cannot be listed is left out, warned about and added to ``unlisted`` (as a message may quote it),
    so that one such thing does not stop the scan of the others: a folder that cannot be read, and a media file
    whose name is not UTF-8 (a URI is read as it is stored, and Parquet's strings, so the rows' URIs, must be
    UTF-8). A source that cannot be read at all is a ``ScanError``. ``coverage``, when given, is filled with what the
    listing vouches for once it has ended (``Coverage``: what a scan may mark deleted).
    """
    unlisted = [] if unlisted is None else unlisted
    blocked: list[str] = []
    source = normalize_uri(source)  # `S3://b/x` and `s3://b/x` are one source (fsspec knows only the latter)
    try:
        fs, root = fsspec.core.url_to_fs(source, **storage_options)
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing fsspec backend, bad options
        raise ScanError(f"cannot open source {source}: {one_line(exc)}") from exc
    local = is_local(fs)
    root = os.path.abspath(root) if local else root.rstrip("/")
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    wanted = partial(_wanted, root, suffixes, include, exclude)
    fs.invalidate_cache()  # a long-lived process must see tonight's objects, not a cached listing
    try:
        single = fs.isfile(root)
        if single:
            infos = {root: fs.info(root)}  # a link to a file: its target's type, size and mtime
        else:
            infos = _local_files(root, unlisted, wanted, blocked) if local else fs.find(root, detail=True, withdirs=False)
            # an object store has no empty prefixes, only keys: nothing under a prefix that is not even a
            # folder marker (`prefix/`) is a mistyped or removed source, not a quiet night
            if not infos and not fs.exists(root):
                raise SourceNotFoundError(f"source not found: {source} (no such folder, object or prefix)")
    except ScanError:
        raise
    except FileNotFoundError as exc:  # s3fs: no such bucket
        raise SourceNotFoundError(f"source not found: {source} ({one_line(exc, 200)})") from exc
    except Exception as exc:  # noqa: BLE001 - credentials, network, permissions
        raise ScanError(f"cannot list source {source}: {one_line(exc)}") from exc
    entries = []
    for path, info in sorted(infos.items()):
        if info.get("type", "file") != "file" or not wanted(path):
            continue
        uri = object_uri(fs, path)
        try:
            uri.encode("utf-8")
        except UnicodeEncodeError:  # a local name in another encoding (os.fsdecode kept its bytes as surrogates)
            _unlisted(unlisted, _printable(uri), "its name is not valid UTF-8: rename it to scan it")
            continue
        entries.append(object_entry(uri, info))
    if coverage is not None:  # URIs as the rows hold them (the listing's paths, redacted), matched by the same filters
        top = redact_uri(object_uri(fs, root))
        coverage.root, coverage.single = top, single
        coverage.blocked = [redact_uri(object_uri(fs, path)) for path in blocked]
        coverage.wanted = partial(_wanted, top, suffixes, include, exclude)
    return entries
