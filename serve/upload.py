"""Receiving a request body so that no client can hold the server: one deadline for the whole body (408), a
size limit counted while it streams (413), and a multipart upload streamed straight into a spooled temporary
file (in memory up to ``serve.spool_memory_bytes``, then on disk), never joined into one bytes object. A client
that goes away mid-body is a cancelled request, as Serve's own cancellation is.

The bytes are read from the spool once, into one array, when the graph is ready for them (``read_array``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from ray.exceptions import TaskCancelledError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from serve.problems import ProblemError

MULTIPART_SLACK = 64 * 1024  # multipart framing and headers on top of the file itself


@asynccontextmanager
async def body_deadline(seconds: float) -> AsyncIterator[None]:
    """408 when the body is not in after ``seconds`` (a trickling client would otherwise hold its place).

    A client that disconnects mid-body raises CancelledError: Starlette says ClientDisconnect, and under Serve
    ``request.stream()`` raises Ray's TaskCancelledError once the proxy drops the request. No answer can reach it."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise ProblemError(408, f"the request body did not arrive within {seconds:g} s") from None
    except (ClientDisconnect, TaskCancelledError):
        raise asyncio.CancelledError("the client disconnected before the body was complete") from None


def check_length(request: Request, limit: int) -> None:
    """413 before reading anything when ``Content-Length`` already says the body is too big."""
    length = request.headers.get("content-length")
    if length is None:
        return
    try:
        too_big = int(length) > limit
    except ValueError:
        raise ProblemError(400, "invalid Content-Length header") from None
    if too_big:
        raise ProblemError(413, f"request body is {int(length)} bytes, over the {limit}-byte limit")


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, refusing (413) as soon as they add up to more than ``limit``."""
    check_length(request, limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, f"request body is over the {limit}-byte limit")
        if chunk:
            yield chunk


async def read_small_body(request: Request, limit: int) -> bytes:
    """A small body (JSON) in one piece."""
    return b"".join([chunk async for chunk in limited_stream(request, limit)])


@dataclass
class Upload:
    """The ``file`` part of a multipart body, spooled; ``close()`` deletes it."""

    name: str
    file: UploadFile

    @property
    def size(self) -> int:
        return self.file.size or 0

    def read_array(self) -> np.ndarray:
        """The bytes in one uint8 array, read straight from the spool: the one copy on this replica (Ray puts
        an array into the object store without pickling another). Blocking: call it in a thread."""
        out = np.empty(self.size, np.uint8)
        view, filled = memoryview(out), 0
        spool = self.file.file
        spool.seek(0)
        while filled < self.size:
            read = spool.readinto(view[filled:])
            if not read:
                raise OSError(f"spooled upload ended after {filled} of {self.size} bytes")
            filled += read
        return out

    async def close(self) -> None:
        await self.file.close()


async def receive_upload(request: Request, max_file_bytes: int, spool_memory_bytes: int) -> Upload:
    """Stream a multipart body into a spooled file; 400 for a malformed body or no ``file`` part, 413 for a
    file over ``max_file_bytes`` (the body may carry ``MULTIPART_SLACK`` more for the framing)."""
    parser = MultiPartParser(request.headers, limited_stream(request, max_file_bytes + MULTIPART_SLACK),
                             max_files=1, max_fields=4)
    parser.spool_max_size = spool_memory_bytes
    try:
        form = await parser.parse()  # closes its files itself when parsing fails
    except MultiPartException as exc:
        raise ProblemError(400, f"malformed multipart body: {exc.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise ProblemError(400, "multipart body needs a file field named 'file'")
    for _, value in form.multi_items():
        if isinstance(value, UploadFile) and value is not upload:
            await value.close()
    if (upload.size or 0) > max_file_bytes:
        await upload.close()
        raise ProblemError(413, f"file is over the {max_file_bytes}-byte limit")
    name = os.path.basename((upload.filename or "").replace("\\", "/"))[:255]
    return Upload(name or "upload", upload)
