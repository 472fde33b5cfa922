"""pipeline/atomic.py: a file is the old one or the new one, never half, and no temporary file is left."""

from __future__ import annotations

import threading

import pytest

from pipeline.atomic import replacing, write_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "record.json"
    write_atomic(path, b"old")
    with pytest.raises(RuntimeError):
        with replacing(path) as tmp:
            tmp.write_bytes(b"half of the ne")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]


def test_writers_at_once_each_leave_a_whole_file(tmp_path):
    path = tmp_path / "lease.json"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=write_atomic, args=(path, p), kwargs={"durable": True}) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["lease.json"]


def test_the_temporary_is_hidden_beside_the_target(tmp_path):
    with replacing(tmp_path / "part-1.parquet") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".part-1.parquet.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"x")
    assert (tmp_path / "part-1.parquet").read_bytes() == b"x"
