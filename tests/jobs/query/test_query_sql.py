"""`query` (jobs/query/sql.py, jobs/cli/query.py): every DuckDB value a monitoring query returns prints as JSON or
CSV, object keys print as they are, brackets included (rich markup would eat or choke on them), and S3 without
credentials fails in one line."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from typer.testing import CliRunner

from jobs.query.formats import format_rows
from jobs.query.sql import run_query
from jobs.scan.output import OutputStore
from helpers import one_row_output


ODD = "/media/clip [final] v2 [/b].mp4"  # a legal object key that is also rich markup


def _app():
    from jobs.cli import app

    return app


def _output(tmp_path) -> str:
    return one_row_output(tmp_path, ODD)


def test_intervals_decimals_times_uuids_and_bytes_print_as_json_and_csv(tmp_path):
    sql = ("SELECT now() - max(scanned_at) AS age, 0.5 AS share, TIME '10:00' AS at, "
           "'6f1e0e52-1f4b-4f0e-9d8e-3a2b1c0d9e8f'::UUID AS id, 'jpeg'::BLOB AS thumb, true AS ok FROM videos")
    columns, rows = run_query(_output(tmp_path), sql)
    (got,) = json.loads(format_rows(columns, rows, "json"))
    assert 0 <= got["age"] < 600 and got["share"] == 0.5 and got["at"] == "10:00:00"
    assert got["id"] == "6f1e0e52-1f4b-4f0e-9d8e-3a2b1c0d9e8f" and base64.b64decode(got["thumb"]) == b"jpeg"
    header, line = format_rows(columns, rows, "csv").splitlines()
    assert got["ok"] is True and header == "age,share,at,id,thumb,ok"
    assert line.endswith(",0.5,10:00:00,6f1e0e52-1f4b-4f0e-9d8e-3a2b1c0d9e8f,anBlZw==,true")  # as JSON, not Python's True


def test_the_latest_row_is_the_latest_scan_whatever_the_workers_clocks_say(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    fast_clock = datetime(2026, 1, 3, tzinfo=timezone.utc)  # the earlier scan's worker ran a day ahead
    for scan_id, label, at in [("20260102T000000Z-aaaaaa", "FAKE", fast_clock),
                               ("20260102T010000Z-bbbbbb", "REAL", datetime(2026, 1, 2, 1, tzinfo=timezone.utc))]:
        row = {"schema_version": 1, "scan_id": scan_id, "uri": "/a.mp4", "fingerprint": "f", "label": label,
               "score": 0.5, "faces": 1, "tracks": 1, "model_version": "m", "scanned_at": at}
        store.commit(f"part-{scan_id}-00000", "2026-01-02", [row], [])
    _, rows = run_query(str(tmp_path / "out"), "SELECT label FROM videos")
    assert rows == [("REAL",)]


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


def test_a_keys_control_characters_are_written_out_in_the_query_table(tmp_path):
    """An uploader's key with ESC sequences (cursor up, erase line, window title) must not drive the terminal."""
    from jobs.cli import app

    output = _output(tmp_path)
    hostile = "clip\x1b[2K\x1b[1Ahidden\x1b]0;pwned\x07.mp4"
    result = CliRunner().invoke(app, ["query", f"SELECT '{hostile}' AS \"k\x1bey\" FROM videos", "-o", output])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output, repr(result.output)
    assert "clip\\x1b[2K\\x1b[1Ahidden\\x1b]0;pwned\\x07.mp4" in result.output and "k\\x1bey" in result.output


def test_columns_an_old_schema_lacks_read_as_typed_nulls(tmp_path):
    """Schema 1 parts (no videos.error_code, no faces.thumb_jpeg): every newer column reads as a null of its own type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.scan.output import FACES_SCHEMA, PARTITION, VIDEOS_SCHEMA

    now = datetime.now(timezone.utc)
    rows = {"videos": {"schema_version": 1, "scan_id": "old", "uri": "/a.mp4", "fingerprint": "f", "label": "FAKE",
                       "score": 0.9, "model_version": "v", "scanned_at": now},
            "faces": {"schema_version": 1, "scan_id": "old", "uri": "/a.mp4", "face": 0, "frame": 0, "score": 0.9,
                      "model_version": "v", "scanned_at": now}}
    for table, schema in (("videos", VIDEOS_SCHEMA), ("faces", FACES_SCHEMA)):
        old = pa.schema([f for f in schema if f.name not in ("error_code", "thumb_jpeg")])
        part = tmp_path / table / f"{PARTITION}=2026-01-01" / "part-old-00000.parquet"
        part.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([rows[table]], schema=old), part)
    _, got = run_query(str(tmp_path), "SELECT count(thumb_jpeg), typeof(any_value(thumb_jpeg)), "
                                      "(SELECT typeof(any_value(error_code)) FROM videos) FROM faces")
    assert got == [(0, "BLOB", "VARCHAR")]
    _, got = run_query(str(tmp_path), "SELECT count(*) FROM faces WHERE octet_length(thumb_jpeg) > 0")
    assert got == [(0,)]


def test_bare_query_and_report_read_the_output_the_settings_name(tmp_path, monkeypatch):
    """Where a scan configured by DFS_SCAN__OUTPUT or a config file wrote, not ./scan-output; flags still win."""
    from jobs.cli import app

    output = _output(tmp_path)
    monkeypatch.chdir(tmp_path)  # no ./scan-output here
    monkeypatch.setenv("DFS_SCAN__OUTPUT", output)
    result = CliRunner().invoke(app, ["query", "SELECT uri FROM videos"])
    assert result.exit_code == 0 and ODD in result.output, result.output
    result = CliRunner().invoke(app, ["report", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["objects"] == 1, result.output

    monkeypatch.delenv("DFS_SCAN__OUTPUT")
    config = tmp_path / "settings.yaml"
    config.write_text(f"scan:\n  output: {json.dumps(output)}\n")
    result = CliRunner().invoke(app, ["report", "--config", str(config), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["objects"] == 1, result.output
    result = CliRunner().invoke(app, ["query", "SELECT count(*) AS n FROM videos", "-c", str(config), "-f", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"n": 1}], result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path / "elsewhere"), "--config", str(config)])
    assert result.exit_code == 1 and "no scan output at" in result.output and "elsewhere" in result.output


def test_query_and_report_on_s3_without_credentials_fail_in_one_line(s3_server, s3_bucket, monkeypatch):
    import s3fs

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance metadata endpoint
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    s3fs.S3FileSystem.clear_instance_cache()
    runner = CliRunner()
    for args in (["query", "-o", f"s3://{s3_bucket}/out", "SELECT count(*) FROM videos"],
                 ["report", f"s3://{s3_bucket}/out"]):
        result = runner.invoke(_app(), args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert "Traceback" not in result.output and "credentials" in lines[0].lower(), lines
    s3fs.S3FileSystem.clear_instance_cache()


REFUSED = ["COPY (SELECT * REPLACE ('REAL' AS label) FROM videos_history) TO '{part}' (FORMAT parquet)",
           "SELECT 1; COPY (SELECT 1) TO '{part}'",
           "EXPLAIN ANALYZE COPY (SELECT 1) TO '{part}'",
           "CREATE TABLE t AS SELECT * FROM videos", "ATTACH '{out}/x.duckdb'", "SET TimeZone = 'UTC'",
           "PRAGMA version", "CALL pragma_version()", "INSTALL httpfs",
           # a comment must not hide what EXPLAIN ANALYZE runs (a pattern over the text was fooled by these)
           "EXPLAIN (ANALYZE /* ) SELECT 1 -- */) COPY (SELECT 'x' AS x) TO '{out}/evil.csv'",
           "EXPLAIN (ANALYZE, FORMAT json /* ) SELECT 1 -- */) COPY (SELECT 'x' AS x) TO '{out}/evil.csv'"]


def test_a_table_function_that_changes_settings_is_refused(tmp_path):
    """enable_logging passes as a SELECT but writes log files: the configuration is locked before the user's SQL."""
    from jobs.query.errors import QueryError

    output = _output(tmp_path)
    logs = tmp_path / "logs"
    try:
        run_query(output, f"SELECT * FROM enable_logging(level='info', storage='file', storage_path='{logs}')")
    except QueryError as exc:
        assert "locked" in str(exc)
    else:
        raise AssertionError("enable_logging ran")
    assert not logs.exists()


def test_query_refuses_anything_but_one_read_only_statement(tmp_path):
    """query and report only read (docs/scan.md): a COPY … TO into the output rewrote every verdict."""
    from jobs.query.errors import QueryError

    output = _output(tmp_path)
    (part,) = (tmp_path / "out" / "videos").rglob("part-*.parquet")
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    for sql in REFUSED:
        sql = sql.format(part=part, out=tmp_path / "out")
        try:
            run_query(output, sql)
        except QueryError as exc:
            assert exc.code == "query_failed" and "\n" not in str(exc), sql
            assert str(exc).startswith("query takes one read-only statement"), str(exc)
        else:
            raise AssertionError(f"ran {sql}")
        result = CliRunner().invoke(_app(), ["query", sql, "-o", output])
        assert result.exit_code == 1 and result.output.startswith("query_failed: query takes one"), result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before
    assert run_query(output, "SELECT label FROM videos")[1] == [("FAKE",)]


def test_query_reads_with_select_with_explain_describe_show_and_summarize(tmp_path):
    output = _output(tmp_path)
    for sql in ("SELECT uri FROM videos;", "WITH v AS (SELECT * FROM videos) SELECT count(*) FROM v", "FROM videos",
                "EXPLAIN SELECT * FROM videos", "EXPLAIN (SELECT 1)", f"EXPLAIN COPY (SELECT 1) TO '{output}/x.csv'",
                "DESCRIBE videos", "SHOW TABLES", "SUMMARIZE videos", "SELECT * FROM pragma_version()"):
        columns, rows = run_query(output, sql)
        assert columns and rows, sql
    assert not (tmp_path / "out" / "x.csv").exists()  # EXPLAIN only plans


def test_empty_sql_is_a_clear_error_not_a_trace(tmp_path):
    output = _output(tmp_path)
    for sql in ("", "   \n", "/* nothing but a comment */"):
        result = CliRunner().invoke(_app(), ["query", sql, "-o", output])
        assert result.exit_code == 1, result.output
        assert result.output.startswith("query_failed: no SQL to run: give one read-only statement"), result.output
        assert "NoneType" not in result.output and "Traceback" not in result.output


def test_query_and_reports_show_utc_whatever_the_host_time_zone(tmp_path):
    """DuckDB shows TIMESTAMPTZ in the session's zone, the host's by default; every reader labels times UTC."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
    from report_fixtures import video_row, write_scan

    at, scan = datetime(2026, 1, 1, 23, 30, tzinfo=timezone.utc), "20260101T233000Z-aaaaaa"  # 18:30 in New York
    write_scan(tmp_path / "out", scan, at, [video_row(scan, "/a.mp4", "FAKE", 0.9, at)])
    code = f"""
import json
from jobs.query.formats import format_rows
from jobs.query.sql import connect, run_query
from jobs.report.data import load
from jobs.report.text import report
out = {str(tmp_path / 'out')!r}
columns, rows = run_query(out, "SELECT scanned_at, (SELECT started_at FROM runs) AS started FROM videos")
text = report(out)
data = load(connect(out), out)
print(json.dumps([json.loads(format_rows(columns, rows, "json")), text["last_scan"], text["runs"][0]["started_at"],
                  data.runs[0]["started_at"].isoformat()]))
"""
    env = {**os.environ, "TZ": "America/New_York"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr
    query, last_scan, text_started, page_started = json.loads(proc.stdout.strip().splitlines()[-1])
    utc = "2026-01-01T23:30:00+00:00"
    assert query == [{"scanned_at": utc, "started": utc}]
    assert last_scan == text_started == page_started == utc


def test_query_and_report_failures_say_their_code_and_report_json_prints_it_as_json(tmp_path):
    """No output there: `code: message` on stderr, exit 1; `report --json` also one JSON line on stdout."""
    missing = str(tmp_path / "no-scan-here")
    runner = CliRunner()
    query = runner.invoke(_app(), ["query", "SELECT 1", "-o", missing])
    assert query.exit_code == 1 and query.output.startswith(f"query_failed: no scan output at {missing}"), query.output
    for args in (["report", missing], ["report", missing, "--json"]):
        result = runner.invoke(_app(), args)
        assert result.exit_code == 1 and result.stderr.startswith("query_failed: "), result.output
        assert "Traceback" not in result.output
    assert json.loads(result.stdout) == {"error_code": "query_failed", "error": f"no scan output at {missing}"}
    bad = runner.invoke(_app(), ["report", missing, "--json", "--config", str(tmp_path / "none.yaml")])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["error_code"] == "invalid_configuration", bad.output


def _with_faces(tmp_path) -> OutputStore:
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    now = datetime.now(timezone.utc)
    store.commit("part-s0-00000", "2026-01-02",
                 [{"schema_version": 4, "scan_id": "s0", "uri": "/a.mp4", "fingerprint": "f", "label": "FAKE",
                   "score": 0.9, "faces": 2, "model_version": "m", "scanned_at": now}],
                 [{"schema_version": 4, "scan_id": "s0", "uri": "/a.mp4", "face": i, "frame": i, "score": 0.9,
                   "model_version": "m", "scanned_at": now} for i in range(2)])
    return store


def test_a_faces_part_with_corrupt_data_is_left_out_with_a_warning_naming_it(tmp_path, caplog):
    """Its footer parses (so the views take it) but its pages do not, and DuckDB's message names no file: the part is
    found, named in a warning and left out, and the query answers from the rest (docs/scan.md)."""
    import logging
    from pathlib import Path

    store = _with_faces(tmp_path)
    (faces,) = store.list_parts("faces").values()
    data = bytearray(Path(faces).read_bytes())
    data[4:200] = b"\xff" * 196
    Path(faces).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert run_query(str(tmp_path / "out"), "SELECT * FROM faces")[1] == []
    assert f"skipping unreadable part {faces} (" in caplog.text
    result = CliRunner().invoke(_app(), ["query", "SELECT count(*) AS n FROM faces", "-o", str(tmp_path / "out"),
                                         "-f", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"n": 0}], result.output
    result = CliRunner().invoke(_app(), ["query", "SELECT nope FROM videos", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "unreadable part" not in result.output  # an SQL error: no part to blame
    # the user's own errors of the exception types a corrupt page raises: no part to blame, and no part read whole
    for sql in ("SELECT error('oops')", "SELECT json_extract('{', '$')", "SELECT strptime('2026-13', '%Y-%m')"):
        result = CliRunner().invoke(_app(), ["query", sql, "-o", str(tmp_path / "out")])
        assert result.exit_code == 1 and "query_failed" in result.output, result.output
        assert "unreadable part" not in result.output, (sql, result.output)


def _two_parts(output: str, storage_options: dict | None = None) -> OutputStore:
    """Two committed parts (videos and faces): /m/0.mp4 FAKE 0.9 in part-s0-00000, /m/1.mp4 REAL 0.1 in -00001."""
    store = OutputStore(output, storage_options or {})
    store.prepare()
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    for k, (label, score) in enumerate((("FAKE", 0.9), ("REAL", 0.1))):
        uri = f"/m/{k}.mp4"
        store.commit(f"part-s0-{k:05d}", "2026-01-02",
                     [{"schema_version": 4, "scan_id": "s0", "uri": uri, "fingerprint": "f", "label": label,
                       "score": score, "faces": 1, "model_version": "m", "scanned_at": now}],
                     [{"schema_version": 4, "scan_id": "s0", "uri": uri, "face": 0, "frame": 0, "score": score,
                       "model_version": "m", "scanned_at": now}])
    return store


def test_a_videos_part_whose_score_data_is_corrupt_is_left_out_by_query(tmp_path, caplog):
    """A part whose footer and other columns are fine but whose `score` pages are not (the reviewer's colcorrupt.py):
    every query reading scores failed with `TProtocolException … unreadable part: …`, run after run."""
    import logging

    from helpers import corrupt_column

    output = str(tmp_path / "out")
    bad = _two_parts(output).list_parts("videos")["part-s0-00001.parquet"]
    corrupt_column(bad, "score")
    with caplog.at_level(logging.WARNING):
        assert run_query(output, "SELECT uri, score FROM videos")[1] == [("/m/0.mp4", 0.9)]
    assert f"skipping unreadable part {bad} (" in caplog.text
    result = CliRunner().invoke(_app(), ["query", "SELECT uri, score FROM videos", "-o", output, "-f", "csv"])
    assert result.exit_code == 0 and result.stdout == "uri,score\n/m/0.mp4,0.9\n", result.output


# what `query` SQL must not reach: files beside the output ({home}: HOME, {other}: another output), extensions it would
# download into ~/.duckdb (no network here: the download fails, but only after ~/.duckdb/extensions is made)
PROBES = ["SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM read_csv('/etc/passwd')",
          "SELECT * FROM glob('/root/*')", "SELECT * FROM glob('{home}/*')", "SELECT count(*) FROM read_parquet('{other}/videos/*/*.parquet')",
          "SELECT * FROM read_parquet('{out}/../other/videos/*/*.parquet')", "SELECT * FROM read_xlsx('{home}/x.xlsx')",
          "SELECT * FROM 'https://example.com/x.csv'", "SELECT * FROM sqlite_scan('{home}/x.db', 't')"]


def test_query_reads_nothing_but_its_output_and_installs_no_extension(tmp_path, monkeypatch):
    """"One read-only statement over the output" (docs/scan.md): DuckDB's table functions read any file the user can
    and install extensions on first use; each probe is refused with query_failed and nothing is written under HOME."""
    import pytest

    from jobs.query.errors import QueryError
    from jobs.report.text import report

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    output = _output(tmp_path)
    _two_parts(str(tmp_path / "other"))
    for sql in PROBES:
        sql = sql.format(home=home, other=tmp_path / "other", out=output)
        with pytest.raises(QueryError) as refused:
            run_query(output, sql)
        assert refused.value.code == "query_failed" and "\n" not in str(refused.value), sql
    assert list(home.iterdir()) == []
    assert run_query(output, f"SELECT count(*) FROM read_parquet('{output}/videos/*/*.parquet')")[1] == [(1,)]
    assert report(output)["objects"] == 1 and list(home.iterdir()) == []


def test_an_s3_output_whose_prefix_holds_glob_characters_is_read(s3_server, s3_bucket):
    """`s3://bucket/out[1]`: DuckDB globs each part's path through fsspec, which read `[1]` as a pattern and found
    nothing (`No files found that match the pattern`); the parts of `out1`, which it would match, stay out."""
    from jobs.report.text import report

    options = s3_server["storage_options"]
    output = f"s3://{s3_bucket}/out[1]"
    _two_parts(output, options)
    row = {"schema_version": 4, "scan_id": "s1", "uri": "/m/2.mp4", "fingerprint": "f", "label": "FAKE",
           "model_version": "m", "scanned_at": datetime.now(timezone.utc)}
    _two_parts(f"s3://{s3_bucket}/out1", options).commit("part-s1-00000", "2026-01-03", [row], [])  # `out[1]` matches
    assert run_query(output, "SELECT uri FROM videos ORDER BY uri", options)[1] == [("/m/0.mp4",), ("/m/1.mp4",)]
    assert run_query(output, "SELECT count(*) FROM faces", options)[1] == [(2,)]
    assert report(output, options)["objects"] == 2


def test_faces_of_an_uncommitted_part_are_not_read(tmp_path):
    """A faces part whose videos twin never landed (a crash, or a commit in flight) belongs to no verdict."""
    import shutil

    store = _with_faces(tmp_path)
    (faces,) = store.list_parts("faces").values()
    shutil.copy(faces, faces.replace("part-s0-00000", "part-s1-00000"))  # the faces half of scan s1's commit
    _, rows = run_query(str(tmp_path / "out"), "SELECT count(*), count(DISTINCT scan_id) FROM faces_history")
    assert rows == [(2, 1)]


def test_a_folder_or_file_that_is_no_scan_output_is_said_to_be(tmp_path):
    """The parent of an output, an empty folder or a file given as -o: no manifest, parts or run records."""
    from jobs.query.errors import QueryError

    _with_faces(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    for path in (tmp_path, tmp_path / "empty", tmp_path / "passwd"):
        try:
            run_query(str(path), "SELECT count(*) FROM videos")
        except QueryError as exc:
            assert str(exc) == f"no scan output at {path}", exc
        else:
            raise AssertionError(f"read {path} as an output")
        result = CliRunner().invoke(_app(), ["report", str(path)])
        assert result.exit_code == 1 and "no scan output at" in result.output, result.output
    assert run_query(str(tmp_path / "out"), "SELECT count(*) FROM videos")[1] == [(1,)]


def test_query_and_report_never_print_the_credentials_of_the_output_they_were_given(tmp_path):
    """`report --json http://bob:HunterPw@…/scanout` printed `no scan output at http://bob:HunterPw@…` (query -o and
    the text form too), and a report on an output it could read named it so in its header, JSON and page."""
    from helpers import served

    from jobs.query.sql import read_failure

    _output(tmp_path)  # out: parts that http cannot list; fresh: a manifest only, an output of 0 objects
    OutputStore(str(tmp_path / "fresh")).prepare()
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(_app(), list(args))
        assert "HunterPw" not in result.output and "SIGSECRET" not in result.output, result.output
        return result

    with served(tmp_path) as base:
        secret = base.replace("http://", "http://bob:HunterPw@")
        for output, said in ((f"{secret}/out", f"query_failed: cannot read scan output {base}/out: "),
                             (f"{secret}/nothere?sig=SIGSECRET", f"query_failed: no scan output at {base}/nothere?sig=REDACTED")):
            for args in (["query", "SELECT 1", "-o", output], ["report", output], ["report", output, "--json"]):
                result = run(*args)
                assert result.exit_code == 1 and result.output.startswith(said), result.output
            assert json.loads(result.stdout)["error"].startswith(said.removeprefix("query_failed: "))
        fresh = f"{secret}/fresh?token=SIGSECRET"
        assert run("query", "SELECT count(*) FROM videos", "-o", fresh).exit_code == 0
        assert run("report", fresh).output.startswith(f"{base}/fresh?token=REDACTED: 0 objects")
        assert json.loads(run("report", fresh, "--json").stdout)["output"] == f"{base}/fresh?token=REDACTED"
        assert run("report", fresh, "--html", str(tmp_path / "r.html")).exit_code == 0
    page = (tmp_path / "r.html").read_text()
    assert "HunterPw" not in page and f"<title>DeepfakeStream report — {base}/fresh?token=REDACTED</title>" in page
    failure = read_failure(secret, None, ValueError("boom"), f"cannot report on {secret}/out?token=T: boom")
    assert str(failure) == f"cannot report on {base}/out?token=REDACTED: boom"  # a read that broke half-way


def _export_output(tmp_path, n: int) -> str:
    """``n`` objects, each with a face (a box list, a thumbnail); some without a score, some with a NaN one."""
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    at = datetime(2026, 1, 2, 3, tzinfo=timezone.utc)
    score = [None if i % 7 == 0 else float("nan") if i % 11 == 0 else i / n for i in range(n)]
    store.commit("part-s0-00000", "2026-01-02",
                 [{"schema_version": 4, "scan_id": "s0", "uri": f"/m/{i:06d} \"q\",.mp4", "fingerprint": "f",
                   "label": "FAKE", "score": score[i], "faces": 1, "model_version": "m", "scanned_at": at} for i in range(n)],
                 [{"schema_version": 4, "scan_id": "s0", "uri": f"/m/{i:06d} \"q\",.mp4", "face": 0, "frame": 0,
                   "score": 0.5, "box": [1.0, 2.0, 3.5, 4.0], "thumb_jpeg": b"\xff\xd8" + bytes([i % 256]),
                   "model_version": "m", "scanned_at": at} for i in range(n)])
    return str(tmp_path / "out")


EXPORT = "SELECT v.*, f.box, f.thumb_jpeg, {'n': v.faces, 'at': v.scanned_at} AS s FROM videos v JOIN faces f USING (uri) ORDER BY uri"


def _whole(columns, rows, fmt: str) -> str:
    """What `query` printed before it streamed: every row fetched, then formatted at once."""
    import csv
    import io

    from jobs.query.formats import jsonable

    if fmt == "json":
        return json.dumps([dict(zip(columns, map(jsonable, row))) for row in rows], indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if jsonable(v) is None else json.dumps(jsonable(v)) if isinstance(v, (list, dict))
                         else jsonable(v) for v in row])
    return buffer.getvalue()


def test_csv_and_json_exports_are_streamed_in_batches_and_equal_the_whole_result(tmp_path):
    """An export is written batch by batch as DuckDB reads (1M faces rows took 5.4 GB held whole): the same text."""
    from jobs.query.sql import BATCH_ROWS, connect, stream_query

    n = BATCH_ROWS + 2345  # two batches through the command
    output = _export_output(tmp_path, n)
    con = connect(output)
    result = con.execute(EXPORT)
    columns, rows = [d[0] for d in result.description], result.fetchall()
    assert len(rows) == n
    with stream_query(output, EXPORT, batch_rows=1000) as (streamed, batches):
        sizes, got = [], []
        for batch in batches:
            sizes.append(len(batch))
            got += batch
    assert streamed == columns and sizes == [1000] * (n // 1000) + [n % 1000]
    assert [repr(r) for r in got] == [repr(r) for r in rows]  # repr: NaN == NaN
    for fmt in ("csv", "json"):
        said = CliRunner().invoke(_app(), ["query", EXPORT, "-o", output, "-f", fmt])
        assert said.exit_code == 0 and said.stdout == _whole(columns, rows, fmt), said.stderr
    assert format_rows(columns, [], "json") == "[]\n" and format_rows(columns, [], "csv") == ",".join(columns) + "\n"


def test_json_holds_no_infinity_or_nan(tmp_path):
    """`Infinity` and `NaN` are no JSON: a strict parser (jq, JSON.parse) refused the whole answer."""
    def strict(constant):
        raise AssertionError(f"{constant} in the JSON")

    sql = "SELECT 'inf'::DOUBLE AS a, '-inf'::FLOAT AS b, 'nan'::DOUBLE AS c, [1.5, '-inf'::DOUBLE] AS d, 2.5 AS e"
    said = CliRunner().invoke(_app(), ["query", sql, "-o", _output(tmp_path), "-f", "json"])
    assert said.exit_code == 0, said.output
    assert json.loads(said.stdout, parse_constant=strict) == [{"a": None, "b": None, "c": None, "d": [1.5, None], "e": 2.5}]


def test_the_table_shows_its_first_rows_and_says_the_rest_are_left_out(tmp_path):
    from jobs.cli.query import TABLE_ROWS

    output = _output(tmp_path)
    said = CliRunner().invoke(_app(), ["query", f"SELECT range AS n FROM range({TABLE_ROWS + 5})", "-o", output])
    lines = said.stdout.split()
    assert said.exit_code == 0 and str(TABLE_ROWS - 1) in lines and str(TABLE_ROWS) not in lines, said.output
    assert said.stderr.strip() == f"the first {TABLE_ROWS} rows; more left out: -f csv or -f json writes every row"
    said = CliRunner().invoke(_app(), ["query", f"SELECT range AS n FROM range({TABLE_ROWS})", "-o", output])
    assert said.exit_code == 0 and said.stderr.strip() == f"{TABLE_ROWS} row(s)", said.output


def test_duckdb_spills_under_the_temp_dir_not_the_current_directory(tmp_path, monkeypatch):
    """DuckDB's default spill folder, `.tmp` in the current directory, failed where that was read-only (a container's
    /) and left the output's rows wherever the command ran."""
    import gc
    import os
    import tempfile

    from jobs.query.sql import _duckdb

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    con = _duckdb()
    (spill,) = con.execute("SELECT current_setting('temp_directory')").fetchone()
    (folder,) = tmp_path.iterdir()
    assert spill == str(folder / "spill") and folder.stat().st_mode & 0o777 == 0o700
    con.close()
    del con
    gc.collect()
    assert not os.listdir(tmp_path)  # removed with the connection
