"""Helpers shared by tests (and the benchmarks): processes read from /proc (Linux; no psutil here), a folder over HTTP."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [pid], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop_group(proc, timeout: float) -> None:
    """Ctrl-C to ``proc``'s process group (started with ``start_new_session``), SIGKILL past ``timeout`` seconds."""
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def process_title(pid: int) -> str:
    """The process's command line (Ray sets its workers' to ``ray::<actor>.<method>``); '' once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def find_processes(title: str) -> list[int]:
    """Pids whose command line contains ``title`` (e.g. a Serve replica: ``ServeReplica:<app>:Api``)."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and title in process_title(int(e))]


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem`` of ``pid`` in KiB; {} once it is gone. ``RssAnon`` is
    the process's own heap; ``RssShmem`` includes the pages of the Ray object store it has touched."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    fields = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines if ":" in line) if k in fields}


def listeners(pids: list[int]) -> list[tuple[int, str, int]] | None:
    """``(pid, address, port)`` of each TCP socket these processes listen on, from ``/proc/net/tcp{,6}`` and their
    fds; None where that cannot be read (not Linux, or processes of another user)."""
    import ipaddress

    sockets: dict[str, tuple[str, int]] = {}  # inode → (address, port) of the namespace's listening sockets
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as handle:
                for row in handle.read().splitlines()[1:]:
                    fields = row.split()
                    if fields[3] != "0A":  # TCP_LISTEN
                        continue
                    hexaddr, hexport = fields[1].split(":")
                    raw = b"".join(bytes.fromhex(hexaddr[i:i + 8])[::-1] for i in range(0, len(hexaddr), 8))
                    sockets[fields[9]] = (str(ipaddress.ip_address(raw)), int(hexport, 16))
    except OSError:
        return None
    found = []
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except FileNotFoundError:  # closed meanwhile
                    continue
                if link[8:-1] in sockets and link.startswith("socket:["):
                    found.append((pid, *sockets[link[8:-1]]))
        except FileNotFoundError:  # gone meanwhile
            continue
        except PermissionError:
            return None
    return found


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped 127.x (what a dual-stack socket bound to 127.0.0.1 shows)."""
    import ipaddress

    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


class PeakMemory:
    """Samples ``memory_kib(pid)`` in a thread until stopped; ``peak[field]`` is the highest value seen."""

    def __init__(self, pid: int, interval_s: float = 0.01):
        import threading

        self.pid, self.interval_s = pid, interval_s
        self.peak: dict[str, int] = dict(memory_kib(pid))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, value in memory_kib(self.pid).items():
                self.peak[key] = max(self.peak.get(key, 0), value)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


ROOT = Path(__file__).resolve().parents[1]


def photo_crops(size: int, count: int = 6):
    """Windows of a real photo (the bundled astronaut) at a model's input size: real, varied classifier inputs."""
    import cv2
    import numpy as np

    image = cv2.cvtColor(cv2.imread(str(ROOT / "pipeline" / "samples" / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
    return np.stack([cv2.resize(image[10 * i:10 * i + 300, 8 * i:8 * i + 300], (size, size)) for i in range(count)])


def load_bench(name: str):
    """bench/<name>.py as a module: the benches are scripts, not a package (each puts the repo root and
    bench/ on sys.path itself)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """``folder`` over plain HTTP on 127.0.0.1 (a free port, a thread of this process) while the block runs: its base
    URL. It answers any user-info or query string (http.server ignores both): what a credential-carrying URI reads."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def refused_url() -> str:
    """An http:// base URL where nothing listens (a port just freed): its connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def corrupt_column(path: str | Path, column: str) -> None:
    """Overwrite the data of ``column`` (its first row group's pages) in the Parquet file at ``path`` with noise: the
    footer still reads, so only what reads that column fails (DuckDB: ``TProtocolException: Invalid data``)."""
    import random

    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.row_group(0)
    (chunk,) = [meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column]
    start, size = chunk.dictionary_page_offset or chunk.data_page_offset, chunk.total_compressed_size
    data = bytearray(Path(path).read_bytes())
    data[start:start + size] = random.Random(3).randbytes(size)
    Path(path).write_bytes(bytes(data))


def one_row_output(folder: Path, uri: str) -> str:
    """A scan output under ``folder`` holding one FAKE ``videos`` row for ``uri`` (query and CLI tests)."""
    from datetime import datetime, timezone

    from jobs.scan.output import OutputStore

    store = OutputStore(str(folder / "out"))
    store.prepare()
    row = {"schema_version": 1, "scan_id": "s0", "uri": uri, "fingerprint": "size:1:mtime:0", "label": "FAKE",
           "score": 0.9, "faces": 3, "tracks": 1, "model_version": "m", "scanned_at": datetime.now(timezone.utc)}
    store.commit("part-s0-00000", "2026-01-02", [row], [])
    return str(folder / "out")
