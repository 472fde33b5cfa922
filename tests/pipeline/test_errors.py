"""Typed errors (pipeline/errors.py): stable codes, and the one line an operator is shown of any exception."""

from __future__ import annotations

from pipeline.errors import DECODE_FAILED, MediaNotFoundError, code_of, one_line


def test_one_line_is_the_type_and_the_first_line_cut_at_the_limit():
    assert one_line(ValueError("bad header\n  File x.py, line 3\n")) == "ValueError: bad header"
    assert one_line(OSError("  \n")) == "OSError"  # no text: the type alone, never a dangling colon
    assert one_line(RuntimeError("x" * 500), limit=10) == "RuntimeError: " + "x" * 10


def test_a_typed_error_gives_its_code_anything_else_the_default():
    assert code_of(MediaNotFoundError("gone")) == "not_found"
    assert code_of(KeyError("k")) == DECODE_FAILED and code_of(KeyError("k"), "other") == "other"
