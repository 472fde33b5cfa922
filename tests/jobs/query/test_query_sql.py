"""`query` (jobs/query/sql.py, jobs/cli/query.py): every DuckDB value a monitoring query returns prints as JSON or
CSV, and object keys print as they are, brackets included (rich markup would eat or choke on them)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from typer.testing import CliRunner

from jobs.query.sql import format_rows, run_query
from jobs.scan.output import OutputStore


ODD = "/media/clip [final] v2 [/b].mp4"  # a legal object key that is also rich markup


def _output(tmp_path) -> str:
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    row = {"schema_version": 1, "scan_id": "s0", "uri": ODD, "fingerprint": "size:1:mtime:0", "label": "FAKE",
           "score": 0.9, "faces": 3, "tracks": 1, "model_version": "m", "scanned_at": datetime.now(timezone.utc)}
    store.commit("part-s0-00000", "2026-01-02", [row], [])
    return str(tmp_path / "out")


def test_intervals_decimals_times_uuids_and_bytes_print_as_json_and_csv(tmp_path):
    sql = ("SELECT now() - max(scanned_at) AS age, 0.5 AS share, TIME '10:00' AS at, "
           "'6f1e0e52-1f4b-4f0e-9d8e-3a2b1c0d9e8f'::UUID AS id, 'jpeg'::BLOB AS thumb FROM videos")
    columns, rows = run_query(_output(tmp_path), sql)
    (got,) = json.loads(format_rows(columns, rows, "json"))
    assert 0 <= got["age"] < 600 and got["share"] == 0.5 and got["at"] == "10:00:00"
    assert got["id"] == "6f1e0e52-1f4b-4f0e-9d8e-3a2b1c0d9e8f" and base64.b64decode(got["thumb"]) == b"jpeg"
    header, line = format_rows(columns, rows, "csv").splitlines()
    assert header == "age,share,at,id,thumb" and line.endswith(",0.5,10:00:00,6f1e0e52-1f4b-4f0e-9d8e-3a2b1c0d9e8f,anBlZw==")


def test_keys_with_brackets_print_as_they_are_in_query_and_report(tmp_path):
    from jobs.cli import app

    output = _output(tmp_path)
    result = CliRunner().invoke(app, ["query", "SELECT uri FROM videos", "-o", output])
    assert result.exit_code == 0 and ODD in result.output, result.output
    result = CliRunner().invoke(app, ["query", "SELECT now() - max(scanned_at) AS age FROM videos", "-o", output,
                                      "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.output)[0]["age"] >= 0, result.output
    result = CliRunner().invoke(app, ["report", output])
    assert result.exit_code == 0 and ODD in result.output, result.output
