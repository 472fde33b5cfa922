"""The text report on a scan's output (``deepfakestream report``): totals, fake rate per scan day and per prefix
and day, the most suspicious objects, the commonest errors and the recent runs, from DuckDB over the views of
``jobs/query/sql.py``; printed with rich, or as JSON. Per-day tables cover the last ``WINDOW_DAYS`` days and prefix
tables the ``TOP_PREFIXES`` prefixes with the most FAKE verdicts (``jobs/report/queries.py``), so the report stays one
screenful whatever the output's size; ``query`` reads the rest."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.text import Text

from pipeline.logsafe import printable, redact_uri
from jobs.query.formats import jsonable
from jobs.report.queries import (ERRORS, FAKE_RATE, LABEL_COUNTS, TOP_PREFIXES, days, dicts, read_report, suspects,
                                 top_prefixes, window_start)
from jobs.scan.output import OutputStore


def report(output: str, storage_options: dict | None = None, top: int = 10, depth: int | None = None,
           runs: int = 10, con=None) -> dict[str, Any]:
    """Summary of the latest verdict of every object (totals, top suspects, errors), of what each scan day's
    scans found (fake rate per day, and per prefix and day, over the last ``WINDOW_DAYS`` days) and of the last
    ``runs`` scans. Any failure is one ``QueryError`` line."""
    return read_report(output, storage_options, lambda con: _report(con, output, storage_options, top, depth, runs), con)


_RUN_COLUMNS = ("scan_id", "status", "exit_code", "started_at", "ended_at", "listed", "skipped", "scanned",
                "deleted", "failed", "error_rate", "quarantined", "message")


def _jsonable_rows(con, sql: str) -> list[dict]:
    return [{k: jsonable(v) for k, v in row.items()} for row in dicts(con, sql)]


def _report(con, output: str, storage_options: dict | None, top: int, depth: int | None, runs: int) -> dict[str, Any]:
    recent = con.execute(f"""
        SELECT scan_id, status, exit_code, started_at, ended_at, listed, skipped, scanned, deleted, failed,
               error_rate, len(quarantined), message
        FROM runs ORDER BY started_at DESC, scan_id DESC LIMIT {int(runs)}""").fetchall()
    last_success = con.execute("SELECT max(ended_at) FROM runs WHERE status = 'succeeded'").fetchone()[0]
    (totals,) = _jsonable_rows(con, f"""
        SELECT {LABEL_COUNTS}, {FAKE_RATE}, min(scanned_at) AS first_scan, max(scanned_at) AS last_scan,
               count(DISTINCT model_version) AS model_versions
        FROM videos""")
    since = window_start(con)
    by_prefix_day, more = top_prefixes(con, depth, per_day=True, since=since)
    return {
        "output": redact_uri(OutputStore(output, storage_options or {}).display),  # as typed: user:pw@ and all
        **totals,
        "since": jsonable(since),
        "by_day": _jsonable_rows(con, days(since)),
        "by_prefix_day": [{k: jsonable(v) for k, v in row.items()} for row in by_prefix_day],
        "more_prefixes": more,
        "top_suspicious": _jsonable_rows(con, suspects(top)),
        "top_errors": _jsonable_rows(con, ERRORS),
        "last_success": jsonable(last_success),
        "runs": [dict(zip(_RUN_COLUMNS, map(jsonable, row))) for row in recent],
    }


def cell(value: Any) -> Text:
    """A table cell of data (object keys, prefixes, messages): never read as rich markup, control characters written
    out (``pipeline.logsafe.printable``)."""
    return Text(printable(value))


def stdout_console() -> Console:
    """Tables on stdout: the terminal's width, or wide enough for URIs when piped to a file."""
    return Console() if sys.stdout.isatty() else Console(width=240)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"  # None: a NaN score as JSON has it (jsonable)


def print_report(data: dict) -> None:
    """Every value from the output is printed as text (``cell``): never read as markup, control characters written out."""
    from rich.markup import escape
    from rich.table import Table

    out = stdout_console()
    out.print(f"[bold]{escape(printable(data['output']))}[/bold]: {data['objects']} objects — [red]{data['fakes']} fake[/red], "
              f"[green]{data['reals']} real[/green], {data['no_face']} without a face, "
              f"[magenta]{data['errors']} errors[/magenta]; fake rate {_pct(data['fake_rate'])} of scored objects")
    if data["model_versions"] > 1:
        out.print(f"[yellow]note:[/yellow] verdicts come from {data['model_versions']} model versions")
    since = f" since {data['since']}" if data.get("since") else ""
    table = Table("day", "objects", "fake", "real", "no face", "error", "fake rate",
                  title=f"fake rate per scan day{since} (each object's last verdict of the day)", box=None,
                  padding=(0, 2), header_style="bold")
    for row in data["by_day"]:
        table.add_row(str(row["day"]), str(row["objects"]), str(row["fakes"]), str(row["reals"]),
                      str(row["no_face"]), str(row["errors"]), _pct(row["fake_rate"]))
    out.print(table)
    table = Table("prefix", "day", "objects", "fake", "real", "no face", "error", "fake rate",
                  title=f"fake rate per prefix and day{since}, the {TOP_PREFIXES} prefixes with the most fakes "
                        "(each object's last verdict of the day)", box=None, padding=(0, 2), header_style="bold")
    for row in data["by_prefix_day"]:
        table.add_row(cell(row["prefix"]), str(row["day"]), str(row["objects"]), str(row["fakes"]), str(row["reals"]),
                      str(row["no_face"]), str(row["errors"]), _pct(row["fake_rate"]))
    out.print(table)
    if data["more_prefixes"]:
        out.print(f"{data['more_prefixes']} more prefixes: use `deepfakestream query` (docs/report.md)")
    table = Table("uri", "score", "label", "faces", "people", "day", title="most suspicious", box=None,
                  padding=(0, 2), header_style="bold")
    for row in data["top_suspicious"]:
        table.add_row(cell(row["uri"]), _num(row["score"]), cell(row["label"]), str(row["faces"]), str(row["tracks"]),
                      str(row["day"]))
    out.print(table)
    if data["top_errors"]:
        table = Table("error code", "objects", "example", title="errors (current verdicts)", box=None, padding=(0, 2),
                      header_style="bold")
        for row in data["top_errors"]:
            table.add_row(cell(row["error_code"]), str(row["objects"]), cell(row["example"]))
        out.print(table)
    if data["runs"]:
        table = Table("scan", "status", "exit", "started (UTC)", "listed", "skipped", "scanned", "deleted", "failed",
                      "quarantined",
                      title="recent runs (query the `runs` view for more)", box=None, padding=(0, 2), header_style="bold")
        for row in data["runs"]:
            colour = "green" if row["status"] == "succeeded" else "yellow" if row["status"] == "running" else "red"
            table.add_row(cell(row["scan_id"]), Text(printable(row["status"]), style=colour),
                          str(row["exit_code"] if row["exit_code"] is not None else "-"),
                          str(row["started_at"])[:19], str(row["listed"]), str(row["skipped"]), str(row["scanned"]),
                          str(row["deleted"]), str(row["failed"]), str(row["quarantined"]))
        out.print(table)
        out.print(f"last successful run ended {data['last_success'] or 'never'}")
