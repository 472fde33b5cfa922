"""Helpers for the stage batch format: a dict of equal-length numpy columns (Ray Data's "numpy" format).

Per-item arrays of different shapes (a video's frames, its face crops) live in object columns, one
array per row, so every stage can take a batch from Ray Data, Ray Serve or a plain loop unchanged.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

Batch = dict[str, np.ndarray]


def object_column(values: Iterable[Any]) -> np.ndarray:
    """An object array holding each value as-is (numpy would otherwise try to stack arrays)."""
    values = list(values)
    column = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        column[index] = value
    return column


def batch_size(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def errors_of(batch: Batch) -> list[str]:
    """The per-row error messages ('' where the row is fine)."""
    n = batch_size(batch)
    if "error" not in batch:
        return [""] * n
    return ["" if e is None else str(e) for e in batch["error"]]


def codes_of(batch: Batch) -> list[str]:
    """The per-row error codes (``pipeline.errors``; '' where the row is fine)."""
    if "error_code" not in batch:
        return ["error" if e else "" for e in errors_of(batch)]
    return ["" if c is None else str(c) for c in batch["error_code"]]


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def concat_batches(batches: list[Batch]) -> Batch:
    """Rows of several batches as one (Serve's ``@serve.batch`` joins requests' rows this way)."""
    out: Batch = {}
    for key in batches[0]:
        columns = [b[key] for b in batches]
        out[key] = object_column(v for c in columns for v in c) if columns[0].dtype == object else np.concatenate(columns)
    return out


def split_batch(batch: Batch, sizes: list[int]) -> list[Batch]:
    """The inverse of ``concat_batches``: consecutive row groups of ``sizes`` rows."""
    bounds = np.cumsum([0, *sizes])
    return [{k: v[bounds[i]:bounds[i + 1]] for k, v in batch.items()} for i in range(len(sizes))]
