"""The Ray instance of its own that ``deepfakestream serve`` and ``deepfakestream scan`` start on this machine: on
127.0.0.1 only, with Ray's token authentication, without the dashboard. Here because both front ends import
``pipeline`` and ``serve/`` must not import ``jobs/``.

Left to itself, Ray 2.60's ``ray.init`` has the GCS, the raylet, every worker and the dashboard agent listen on all
interfaces, and the agents' HTTP servers (the job API on 52365 among them) on the machine's address: a service
started on 127.0.0.1 was reachable from the network. ``_node_ip_address="127.0.0.1"`` alone is turned back into
the machine's address (``services.resolve_ip_for_localhost``) unless Ray is in its one-machine mode, its macOS and
Windows default (``ray_constants.ENABLE_RAY_CLUSTER`` off; the environment variable that sets it is read at
import, too late here): set for the start only. Every Ray server then binds 127.0.0.1 (but for Ray Serve's
replicas, whose inter-deployment gRPC servers bind ``[::]`` whatever the node: docs/serve.md "What listens where");
Serve's HTTP proxy still binds ``serve.host`` (its own option); no other machine can join, which a local instance
never needed.

Token authentication: Ray 2.60 turns it on for a new local instance (the token in ``~/.ray/auth_token``, made if
missing) unless ``RAY_AUTH_MODE`` says otherwise. Without the token the GCS, raylet and workers answer
UNAUTHENTICATED and the job API 401, so a process of another user on this machine needs the token too. Ray
writes that file with the umask (0644: any local user could read it, from the first moment of ``ray.init`` on), so
where it would make one, the token is made here first, readable by its owner alone; one that exists is left as it
is (a team's shared token may be group-readable on purpose), with a warning when others may read it. Where
``~/.ray`` cannot be made (HOME unset, a read-only home: a locked-down container), Ray would fail with "Read-only
file system": the token goes to a new 0700 folder under the temp dir, named to Ray by ``RAY_AUTH_TOKEN_PATH``
(Ray's own variable, read by its token loader and inherited by every process it starts), with a warning.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def start_local_ray(**options: Any):
    """``ray.init(**options)`` for a new instance of our own (never one ``ray start`` left on this machine, nor
    ``RAY_ADDRESS``'s: "local"), on loopback; returns Ray's context. ``options``: the caller's (CPUs, logging,
    runtime env, metrics port)."""
    import ray
    from ray._private import ray_constants

    private_token()
    cluster = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        context = ray.init(address="local", include_dashboard=False, _node_ip_address=LOOPBACK, **options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster
    if context.address_info.get("node_ip_address") != LOOPBACK:  # a Ray other than 2.60 may resolve it again
        log.warning("the local Ray listens on %s, not only on %s: firewall its ports",
                    context.address_info.get("node_ip_address"), LOOPBACK)
    return context


def private_token() -> None:
    """Before ``ray.init``: the token Ray would make for a new local instance (token mode, none given), made here
    readable by its owner alone, as Ray would make it (``~/.ray/auth_token``, 64 hex digits); a token file there
    already that others may read is warned about, not changed. Where ``~/.ray`` cannot be made (no home, a read-only
    one) the token goes to a private folder under the temp dir instead, named to Ray by ``RAY_AUTH_TOKEN_PATH``
    (``_elsewhere``)."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode or "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return  # no token, or one that is not a file
    given = os.environ.get("RAY_AUTH_TOKEN_PATH")
    try:
        path = Path(given) if given else Path.home() / ".ray" / "auth_token"
    except RuntimeError as exc:  # HOME unset and a uid without a passwd entry
        _elsewhere(exc)
        return
    try:
        _make(path)
    except OSError as exc:
        if os.path.isfile(path):  # made already (a read-only home may hold one): Ray reads it
            _warn_if_readable(path)
        elif given:  # theirs to fix: Ray says it cannot read the file they named
            log.warning("could not make Ray's token file %s (RAY_AUTH_TOKEN_PATH): %s", given, exc)
        else:
            _elsewhere(exc)


def _make(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))  # Ray's own generate_new_authentication_token


def _warn_if_readable(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("Ray's token file %s may be read by other users (mode %o): whoever reads it can run code in this "
                    "Ray; chmod 600 it unless they are meant to", path, mode)


def _elsewhere(why: BaseException) -> None:
    """The token in a new folder of the temp dir's, 0700 (``mkdtemp``), for this process's Ray and the processes it
    starts (they inherit ``RAY_AUTH_TOKEN_PATH``); Ray itself would write ``~/.ray/auth_token`` and fail. Left
    behind when the process ends: a stale token of a Ray that is gone."""
    try:
        path = Path(tempfile.mkdtemp(prefix="deepfakestream-ray-")) / "auth_token"
        _make(path)
    except OSError as exc:
        raise TokenFileError(f"cannot make Ray's token file in ~/.ray ({why}) nor under the temp dir ({exc}): set "
                             "RAY_AUTH_TOKEN_PATH to a file in a writable folder, or RAY_AUTH_TOKEN to a token "
                             "(64 hex digits, e.g. `openssl rand -hex 32`)") from exc
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    log.warning("cannot make Ray's token file in ~/.ray (%s): made %s for this Ray instead; set RAY_AUTH_TOKEN_PATH "
                "(a file) or RAY_AUTH_TOKEN to choose", why, path)


class TokenFileError(OSError):
    """No token file could be made anywhere: Ray would fail with its own "Read-only file system"."""


def advice(exc: BaseException) -> str:
    """What to do about a local Ray that would not start, where the failure says it (else ""): Ray's socket names
    under a long temp dir exceed AF_UNIX's 107 bytes; Ray takes its folder from RAY_TMPDIR, else TMPDIR, else /tmp."""
    if "AF_UNIX path length" in str(exc):
        return ("; the temp dir's path is too long for Ray's socket names: set RAY_TMPDIR (Ray's own, read before "
                "TMPDIR) to a short writable folder, e.g. RAY_TMPDIR=/tmp")
    return ""


__all__ = ["LOOPBACK", "TokenFileError", "advice", "private_token", "start_local_ray"]
