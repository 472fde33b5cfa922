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
is (a team's shared token may be group-readable on purpose), with a warning when others may read it.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
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
    already that others may read is warned about, not changed."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode or "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return  # no token, or one that is not a file
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        try:
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                log.warning("Ray's token file %s may be read by other users (mode %o): whoever reads it can run code "
                            "in this Ray; chmod 600 it unless they are meant to", path,
                            stat.S_IMODE(path.stat().st_mode))
        except OSError:
            pass
        return
    except OSError as exc:  # a folder we cannot write: Ray makes it, or says why
        log.debug("could not make Ray's token file %s: %s", path, exc)
        return
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))  # Ray's own generate_new_authentication_token


__all__ = ["LOOPBACK", "private_token", "start_local_ray"]
