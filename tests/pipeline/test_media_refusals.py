"""What ``read_media_bytes`` (pipeline/media.py) refuses before reading: a local path that is not a regular file (a
FIFO blocked ``score`` forever; a link to /dev/zero read until the size limit), a large object whose first bytes are
no media type (a sparse file of zeros was read whole to say unsupported_media), and a GCS or Azure refusal, which
is access_denied (the serve 403), not storage_error (502)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fsspec
import pytest
from fsspec.spec import AbstractFileSystem

from pipeline.errors import MediaError, UnsupportedMediaError
from pipeline.media import SNIFF_BYTES, _read_local, read_media_bytes
from pipeline.work import Deadline

MEDIA = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 1024  # a JPEG's signature, 256 KiB: more than one sniff's worth


def _bytes_read() -> int:
    """This process's bytes read so far (Linux's read counter, page cache reads included)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def _refused_promptly(fifo, read) -> None:
    """``read()`` of a FIFO's path ends within seconds, refused as unsupported_media (not a regular file)."""
    outcome: list[BaseException | bytes] = []

    def reading() -> None:
        try:
            outcome.append(read())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    reader = threading.Thread(target=reading, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked in open(): a writer's open lets it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("reading a FIFO blocked in open()")
    (error,) = outcome
    assert isinstance(error, UnsupportedMediaError) and error.code == "unsupported_media", error
    assert "not a regular file" in str(error)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    _refused_promptly(fifo, lambda: read_media_bytes(str(fifo), 10**6))
    _refused_promptly(fifo, lambda: _read_local(str(fifo), 10**6))  # the open step itself


def test_a_fifo_swapped_in_after_a_stat_is_refused_from_the_opened_file(tmp_path, monkeypatch):
    """A file replaced by a FIFO between the stat and the open still blocked the open forever: what is refused is
    what was opened (without blocking) too. The swap is a race: here the stat of that path says "a regular file",
    as the one before the swap did."""
    fifo, regular = tmp_path / "clip.mp4", tmp_path / "regular.jpg"
    os.mkfifo(fifo)
    regular.write_bytes(b"x" * 10)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: real_stat(regular if str(path) == str(fifo) else path, *a, **k))
    _refused_promptly(fifo, lambda: read_media_bytes(str(fifo), 10**6))


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    """Opening a FIFO to look at it releases a writer blocked in its own open (which then dies of SIGPIPE): a stat
    tells it first, so the writer waits on, unharmed."""
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True)
    writer.start()
    time.sleep(0.2)  # the writer is in its open (a reader released later lets it go whenever it got there)
    with pytest.raises(UnsupportedMediaError, match="not a regular file"):
        read_media_bytes(str(fifo), 10**6)
    writer.join(0.5)
    assert writer.is_alive(), "the refusal opened the FIFO: its writer was released"
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let it go
    writer.join(5)


@pytest.mark.skipif(not hasattr(fcntl, "F_SETLEASE"), reason="file leases are Linux's")
def test_a_file_under_a_lease_is_read_once_the_lease_is_released(tmp_path):
    """A lease (Samba's oplocks, NFS delegations) makes an open without blocking fail (EWOULDBLOCK) until it is
    broken: the file is read after the holder lets go, not refused as a storage error."""
    leased = tmp_path / "leased.jpg"
    leased.write_bytes(b"\xff\xd8\xff" + b"x" * 100)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, signal, sys, time\n"
        "signal.signal(signal.SIGIO, lambda *a: None)\n"  # a lease break's signal; released on our own time below
        f"fd = os.open({str(leased)!r}, os.O_RDWR)\n"
        "fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)\n"
        "print('held', flush=True)\n"
        "time.sleep(1.0)\n"
        "fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert read_media_bytes(str(leased), 10**6) == leased.read_bytes()
    finally:
        holder.wait(10)
def test_a_socket_is_refused_as_no_regular_file(tmp_path):
    """Opening a socket fails (ENXIO): it is no media (unsupported_media), as its stat said, not a failing store."""
    import socket

    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "clip.mp4"))
        with pytest.raises(UnsupportedMediaError, match="not a regular file"):
            read_media_bytes(str(tmp_path / "clip.mp4"), 10**6)


@pytest.mark.parametrize("deadline", [None, 30.0])
def test_a_link_to_a_device_is_refused_before_reading(tmp_path, deadline):
    link = tmp_path / "clip.mp4"
    link.symlink_to("/dev/zero")
    before = _bytes_read()
    with pytest.raises(UnsupportedMediaError, match="not a regular file"):
        read_media_bytes(str(link), 10**6, deadline=Deadline(deadline) if deadline else None)
    assert _bytes_read() - before < 10**5


@pytest.mark.parametrize("deadline", [None, 30.0])
def test_a_large_object_of_the_wrong_type_is_refused_from_its_first_bytes(tmp_path, deadline):
    huge = tmp_path / "huge.mp4"
    with open(huge, "wb") as out:
        out.truncate(2 * 1024**3)  # sparse: 2 GiB of zeros that take no disk
    before = _bytes_read()
    with pytest.raises(UnsupportedMediaError) as refused:
        read_media_bytes(str(huge), 4 * 1024**3, deadline=Deadline(deadline) if deadline else None)
    assert refused.value.code == "unsupported_media"
    assert _bytes_read() - before < 4 * SNIFF_BYTES  # its first bytes, not 2 GiB


@pytest.mark.parametrize("size", [0, 10, SNIFF_BYTES, len(MEDIA)])
@pytest.mark.parametrize("deadline", [None, 30.0])
def test_media_is_still_read_whole(tmp_path, size, deadline):
    path = tmp_path / "a.jpg"
    path.write_bytes(MEDIA[:size])
    assert read_media_bytes(str(path), 10**8, deadline=Deadline(deadline) if deadline else None) == MEDIA[:size]


class _Unsized(BaseHTTPRequestHandler):
    """An HTTP server that sends no size (no Content-Length, the body ends with the connection): fsspec streams it."""

    protocol_version = "HTTP/1.0"
    body = MEDIA

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(self.body)

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("body, error", [(MEDIA, None), (bytes(len(MEDIA)), "unsupported_media")])
def test_a_stream_without_a_size_is_sniffed_then_read_whole(body, error):
    handler = type("Handler", (_Unsized,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}/a.jpg"
    try:
        if error is None:
            assert read_media_bytes(uri, 10**8) == body
        else:
            with pytest.raises(MediaError) as refused:
                read_media_bytes(uri, 10**8)
            assert refused.value.code == error
    finally:
        server.shutdown()
        server.server_close()


# --- a store's refusal -------------------------------------------------------------------------------------------

class ClientAuthenticationError(Exception):
    """Stand-in for azure-core's (an optional extra): a credential refused, or no token to be had (no status)."""

    status_code = None


class HttpResponseError(Exception):
    """Stand-in for azure-core's: the store answered with ``status_code``."""

    def __init__(self, status_code: int):
        super().__init__(f"Operation returned an invalid status {status_code}")
        self.status_code = status_code


class HttpError(Exception):
    """Stand-in for gcsfs's: the store answered with ``code``."""

    def __init__(self, code: int):
        super().__init__(f"{code}")
        self.code = code


def _real_azure(status: int | None) -> Exception:
    exceptions = pytest.importorskip("azure.core.exceptions")
    if status is None:
        return exceptions.ClientAuthenticationError("no credential could get a token")
    error = exceptions.HttpResponseError(f"Operation returned an invalid status {status}")
    error.status_code = status
    return error


def _real_gcs(code: int) -> Exception:
    return pytest.importorskip("gcsfs.retry").HttpError({"code": code, "message": "denied"})


REFUSALS = {
    "gcs-forbidden": (lambda: OSError("Forbidden: https://storage.googleapis.com/b/o\nno access"), "access_denied"),
    "gcs-401": (lambda: HttpError(401), "access_denied"),
    "gcs-500": (lambda: HttpError(500), "storage_error"),
    "gcs-real-403": (lambda: _real_gcs(403), "access_denied"),
    "gcs-real-503": (lambda: _real_gcs(503), "storage_error"),
    "azure-auth": (lambda: ClientAuthenticationError("Server failed to authenticate the request"), "access_denied"),
    "azure-403": (lambda: HttpResponseError(403), "access_denied"),
    "azure-500": (lambda: HttpResponseError(500), "storage_error"),
    "azure-real-auth": (lambda: _real_azure(None), "access_denied"),
    "azure-real-403": (lambda: _real_azure(403), "access_denied"),
    "azure-real-500": (lambda: _real_azure(500), "storage_error"),
    "connection-reset": (lambda: ConnectionResetError("reset by peer"), "storage_error"),
}


class _Refusing(AbstractFileSystem):
    """A store whose every answer is ``error``: what gcsfs and adlfs raise, without their servers."""

    protocol = "refusing"
    error: Exception | None = None

    def info(self, path, **kwargs):
        raise self.error


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_stores_refusal_is_access_denied_and_its_failure_a_storage_error(name):
    make, code = REFUSALS[name]
    _Refusing.error = make()
    fsspec.register_implementation("refusing", _Refusing, clobber=True)
    with pytest.raises(MediaError) as caught:
        read_media_bytes("refusing://bucket/a.jpg", 10**8)
    assert caught.value.code == code, caught.value
    assert caught.value.__cause__ is _Refusing.error
