"""An object-store read under a request's deadline (pipeline/media.py ``read_media_bytes``, pipeline/work.py
``Deadline``): against a real store on 127.0.0.1 that trickles 200 B/s (tests/slow_store.py), the read ends at the
deadline, or at once when its call is cancelled, and hangs up on the store; before, it went on for minutes, holding
a decode thread of the server past the request's 504."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.errors import DeadlineExceededError
from pipeline.media import read_media_bytes
from pipeline.work import Deadline
from slow_store import slow_store

DATA = b"\xff\xd8\xff" + bytes(20_000)  # 100 s at 200 B/s


def _uri(store, scheme: str) -> tuple[str, dict]:
    if scheme == "s3":
        return "s3://bucket/in/slow.jpg", store.storage_options
    return f"{store.url}/in/slow.jpg", {}


@pytest.mark.parametrize("scheme", ["s3", "http"])
def test_a_read_from_a_trickling_store_ends_at_its_deadline(scheme):
    with slow_store(DATA) as store:
        uri, options = _uri(store, scheme)
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="reading stopped: the request's deadline passed") as caught:
            read_media_bytes(uri, 10**8, options, deadline=Deadline(3.0))  # room for a loaded CI's client set-up
        took = time.monotonic() - start
        assert caught.value.code == "deadline_exceeded" and 3.0 <= took < 8.0, took  # unbounded it runs 100 s
        (read,) = store.wait_ended(1, timeout_s=5)  # the connection was closed, not left to trickle on
        assert read.hung_up and read.ended - read.started < 8, read


def test_a_cancelled_read_frees_its_thread_at_once():
    """The server stops the Deadline when the client goes away (or the ingress gives up): the read ends within a
    fraction of a second, and says it was cancelled, not that a deadline passed."""
    with slow_store(DATA) as store:
        uri, options = _uri(store, "s3")
        deadline, stopped = Deadline(60), []

        def stop_once_reading():  # once the GET is under way: a loaded CI's client set-up can outlast a fixed 0.5 s
            until = time.monotonic() + 30
            while not store.reads and time.monotonic() < until:
                time.sleep(0.05)
            stopped.append(time.monotonic())
            deadline.stop()

        threading.Thread(target=stop_once_reading, daemon=True).start()
        with pytest.raises(DeadlineExceededError, match="reading stopped: the request was cancelled"):
            read_media_bytes(uri, 10**8, options, deadline=deadline)
        assert time.monotonic() - stopped[0] < 5  # unstopped, 20 KB at 200 B/s takes 100 s (slack: a busy CI)
        assert store.wait_ended(1, timeout_s=5)[0].hung_up


def test_a_read_within_its_deadline_gets_the_whole_object():
    with slow_store(DATA[:600], bytes_per_s=2000) as store:
        for scheme in ("s3", "http"):
            uri, options = _uri(store, scheme)
            assert read_media_bytes(uri, 10**8, options, deadline=Deadline(10)) == DATA[:600]
            assert read_media_bytes(uri, 10**8, options) == DATA[:600]  # a scan's: no deadline, as before
