"""Typed errors (pipeline/errors.py): stable codes, and the one line an operator is shown of any exception."""

from __future__ import annotations

import logging

import pytest

from pipeline import errors
from pipeline.errors import (DECODE_FAILED, OUT_OF_MEMORY, MediaError, MediaNotFoundError, MediaTooLargeError, code_of,
                             media_errors, one_line, row_failure)


def test_one_line_is_the_type_and_the_first_line_cut_at_the_limit():
    assert one_line(ValueError("bad header\n  File x.py, line 3\n")) == "ValueError: bad header"
    assert one_line(OSError("  \n")) == "OSError"  # no text: the type alone, never a dangling colon
    assert one_line(RuntimeError("x" * 500), limit=10) == "RuntimeError: " + "x" * 10


def test_a_typed_error_gives_its_code_anything_else_the_default():
    assert code_of(MediaNotFoundError("gone")) == "not_found"
    assert code_of(KeyError("k")) == DECODE_FAILED and code_of(KeyError("k"), "other") == "other"


def test_an_error_row_of_no_code_or_one_this_version_does_not_know_is_retried():
    """--retry-errors rescans a row a newer scanner wrote with a code this one does not know, or one without a code."""
    assert errors.retryable("some_future_code") and errors.retryable(None)
    assert errors.retryable(errors.DeadlineExceededError.code) and not errors.retryable(MediaTooLargeError.code)


def test_media_errors_wraps_a_decoders_failure_as_corrupt_media_in_one_line():
    with pytest.raises(MediaError) as caught:
        with media_errors("video"):
            raise ValueError("Invalid data found\n" + "ffmpeg log line\n" * 50)
    assert str(caught.value) == "corrupt or unreadable video: Invalid data found" and caught.value.code == "media_corrupt"
    with pytest.raises(MediaError, match=r"^corrupt or unreadable image: said$"):
        with media_errors("image", lambda exc: "said"):
            raise OSError("anything")


@pytest.mark.parametrize("raised", [MediaTooLargeError("too big"), MemoryError()], ids=["typed", "out of memory"])
def test_media_errors_lets_typed_errors_and_out_of_memory_through(raised):
    with pytest.raises(type(raised)) as caught:
        with media_errors("video"):
            raise raised
    assert caught.value is raised


@pytest.mark.parametrize("raised,error,code,level", [
    (MediaTooLargeError("video is 9000 s long"), "video is 9000 s long", "media_too_large", logging.WARNING),
    (MemoryError(), "decode failed: out of memory", OUT_OF_MEMORY, logging.ERROR),
    (RuntimeError("bad\npage two"), "decode failed: RuntimeError: bad", DECODE_FAILED, logging.ERROR),
], ids=["typed", "out of memory", "crash"])
def test_row_failure_gives_the_rows_error_and_code_and_logs_it(caplog, raised, error, code, level):
    log = logging.getLogger("pipeline.decode")
    with caplog.at_level(logging.WARNING, logger="pipeline.decode"):
        assert row_failure(raised, DECODE_FAILED, "decode", "clip\n.mp4", log) == (error, code)
    (record,) = caplog.records
    assert record.levelno == level and "decode failed for clip\\n.mp4" in record.getMessage()
    assert bool(record.exc_info) == (code == DECODE_FAILED)  # the traceback of a crash only


def _error_types(base: type) -> list[type]:
    return [t for sub in base.__subclasses__() for t in (sub, *_error_types(sub))]


def test_every_error_code_is_documented():
    """A code that scripts and alerts are told to read must be written down where they look (docs/, README)."""
    import importlib
    import pkgutil
    from pathlib import Path

    import jobs
    import pipeline
    import serve

    for package in (jobs, pipeline, serve):  # every error type is defined at import
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    root = Path(__file__).resolve().parents[2]
    docs = "".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    codes = {t.code for t in _error_types(errors.DeepfakeStreamError)}
    codes |= {errors.DECODE_FAILED, errors.DETECT_FAILED, errors.WORKER_LOST, errors.OUT_OF_MEMORY}
    assert len(codes) > 30
    assert sorted(c for c in codes if f"`{c}`" not in docs) == []
