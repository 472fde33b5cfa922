"""Query results as CSV or JSON text: every DuckDB value as JSON can hold it, written batch by batch."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Iterable, TextIO

_AS_IS = (str, int, bool)


def jsonable(value: Any) -> Any:
    """A DuckDB value as JSON can hold it: times as ISO text, intervals as seconds, decimals as numbers,
    NaN and ±infinity as null (JSON has none of them), bytes (thumbnails) as base64, anything else unknown as its text."""
    if value is None or type(value) in _AS_IS:  # most values: an export calls this for every one
        return value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):  # `now() - max(ended_at)`: the age checks monitoring runs
        return value.total_seconds()
    if isinstance(value, Decimal):  # `SELECT 0.5` is a DECIMAL in DuckDB
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (str, int, float, bool)):  # a finite float, a subclass
        return value
    return str(value)  # UUID, and whatever else a query can return


def _csv_cell(value: Any) -> Any:
    """As JSON writes it: booleans ``true``/``false`` (csv.writer wrote Python's ``True``), null empty, lists and
    structs as JSON text."""
    value = jsonable(value)
    return "" if value is None else json.dumps(value) if isinstance(value, (list, dict, bool)) else value


def write_rows(columns: list[str], batches: Iterable[list[tuple]], fmt: str, out: TextIO) -> int:
    """Query results to ``out`` batch by batch as they come, CSV or JSON (a list of objects, as ``json.dumps(…,
    indent=2)`` prints it); returns the rows written."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown format {fmt!r} (table, csv or json)")
    written = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
    for rows in batches:
        if fmt == "csv":
            writer.writerows([_csv_cell(v) for v in row] for row in rows)
        else:  # an object per row, indented one level: JSON text holds no raw newline, so each of its lines moves
            out.write("".join(("[\n  " if written + i == 0 else ",\n  ")
                              + json.dumps(dict(zip(columns, map(jsonable, row))), indent=2).replace("\n", "\n  ")
                              for i, row in enumerate(rows)))
        written += len(rows)
    if fmt == "json":
        out.write("\n]\n" if written else "[]\n")
    return written


def format_rows(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """CSV or JSON (a list of objects) text for query results held in memory (``write_rows``)."""
    buffer = io.StringIO()
    write_rows(columns, [rows], fmt, buffer)
    return buffer.getvalue()
