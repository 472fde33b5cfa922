"""``query`` (DuckDB SQL over a scan's output) and ``report`` (its text summary)."""

from __future__ import annotations

import codecs
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.markup import escape

from jobs.cli.common import (AnonOpt, ConfigOpt, EndpointOpt, ProfileOpt, checked, console, refuse, settings_from_cli,
                             storage_flags)
from jobs.cli.logs import setup_logging
from jobs.scan.config import DEFAULT_OUTPUT

OUTPUT_HELP = "; unset: scan.output of --config / DFS_SCAN__OUTPUT, where `scan` writes"


def _output(config: Optional[Path], output: Optional[str], endpoint_url: Optional[str], anon: bool,
            profile: Optional[str], as_json: bool = False) -> tuple[str, dict]:
    """The output and its fsspec options from the settings' ``scan`` section, resolved as ``scan`` resolves them
    (flags > DFS_SCAN__* > config file > defaults), so these commands read where a scan so configured wrote."""
    scan = settings_from_cli(config, as_json=as_json, **{"scan.output": output},
                             **storage_flags(endpoint_url, anon, profile)).scan
    return scan.output, scan.storage_options(scan.output)


class ReportFlags(BaseModel):
    """``report``'s bounds. Here, not typer's ``min=``: typer refuses with a usage box, which breaks ``--json``'s
    one line; this model's refusal is ``invalid_configuration`` like any bad setting (``checked``)."""

    model_config = ConfigDict(extra="forbid", title="report flags")

    top: int = Field(10, ge=1)
    depth: Optional[int] = Field(None, ge=0)
    runs: int = Field(10, ge=0)
    trailing: int = Field(7, ge=1)


class QueryFlags(BaseModel):
    """``query``'s bounds (as ``ReportFlags``)."""

    model_config = ConfigDict(extra="forbid", title="query flags")

    timeout: Optional[float] = Field(None, gt=0)  # none: an export of every row may take long; Ctrl-C stops any


TABLE_ROWS = 1000  # the table format's rows: a terminal's worth; -f csv / json stream every row


def _flag_default(name: str, flags: type[BaseModel] = ReportFlags):
    return flags.model_fields[name].default  # one home for the flags' defaults, as for their bounds


def query(
    sql: str = typer.Argument(..., help="SQL over the views `videos`, `faces` (latest verdicts), `videos_history`, `faces_history` and `runs` (one row per scan)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", show_default=DEFAULT_OUTPUT, help=f"scan output to query (fsspec URI or folder){OUTPUT_HELP}"),
    fmt: str = typer.Option("table", "--format", "-f", help=f"table (the first {TABLE_ROWS} rows), csv or json (every row, written as read)"),
    timeout: Optional[float] = typer.Option(_flag_default("timeout", QueryFlags), "--timeout", help="stop the query after this many seconds (query_failed, exit 1); Ctrl-C stops it too (exit 130, SIGTERM 143)"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Run DuckDB SQL over a scan's Parquet output and print the result."""
    setup_logging(False)
    from jobs.query.errors import QueryError, QueryStopped
    from jobs.query.formats import write_rows
    from jobs.query.sql import stream_query

    if fmt not in ("table", "csv", "json"):
        raise refuse("invalid_configuration", f"unknown --format {fmt!r}: use table, csv or json")
    flags = checked(QueryFlags, timeout=timeout)
    output, options = _output(config, output, endpoint_url, anon, profile)
    try:
        with stream_query(output, sql, options, flags.timeout) as (columns, batches):
            if fmt == "table":
                rows = []
                for batch in batches:  # the first TABLE_ROWS and one more, to tell; leaving stops the query
                    rows += batch[:TABLE_ROWS + 1 - len(rows)]
                    if len(rows) > TABLE_ROWS:
                        break
            else:  # a failure part-way leaves the rows written so far, and exits non-zero
                write_rows(columns, batches, fmt, _data_out())
    except QueryError as exc:
        raise refuse(exc.code, str(exc), status=exc.status if isinstance(exc, QueryStopped) else 1) from exc
    if fmt == "table":
        _print_table(columns, rows)


def _data_out():
    """stdout for -f csv / json: UTF-8 when it is a file or a pipe, whatever the locale says (a program reads it; the
    locale's encoding lost 日本 to escapes, and ISO-8859-1 is no CSV reader's default); on a terminal, the terminal's
    encoding (what it cannot show escaped: ``common.tolerant_streams``). JSON is ASCII either way."""
    out = sys.stdout
    if not out.isatty() and hasattr(out, "reconfigure") and codecs.lookup(out.encoding or "ascii").name != "utf-8":
        out.flush()
        out.reconfigure(encoding="utf-8", errors="backslashreplace")
    return out


def _print_table(columns: list[str], rows: list[tuple]) -> None:
    from rich.table import Table

    from pipeline.logsafe import printable
    from jobs.report.text import cell, stdout_console

    table = Table(*(escape(printable(c)) for c in columns), box=None, padding=(0, 2), header_style="bold")
    for row in rows[:TABLE_ROWS]:  # cell: never read as markup, control characters written out (pipeline/logsafe.py)
        table.add_row(*(cell(v) for v in row))
    stdout_console().print(table)
    if len(rows) > TABLE_ROWS:
        console.print(f"the first {TABLE_ROWS} rows; more left out: -f csv or -f json writes every row")
    else:
        console.print(f"{len(rows)} row(s)")


def report(
    output: Optional[str] = typer.Argument(None, show_default=DEFAULT_OUTPUT, help=f"scan output (fsspec URI or folder){OUTPUT_HELP}"),
    top: int = typer.Option(_flag_default("top"), "--top", help="how many suspicious objects to list (at least 1)"),
    depth: Optional[int] = typer.Option(_flag_default("depth"), "--depth", help="group by the first N path levels (bucket counts as one) instead of the parent folder"),
    runs: int = typer.Option(_flag_default("runs"), "--runs", help="how many recent scans (run records) to list"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write a self-contained HTML page (plots, thumbnails, drift) to this file"),
    trailing: int = typer.Option(_flag_default("trailing"), "--trailing", help="earlier scans the latest is compared with for drift (at least 1)"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Summarise a scan's output: fake rate per prefix and day, the most suspicious objects, errors, recent runs."""
    setup_logging(False, as_json)
    from jobs.query.errors import QueryError
    from jobs.query.sql import connect
    from jobs.report.text import print_report, report as build_report

    checked(ReportFlags, as_json, top=top, depth=depth, runs=runs, trailing=trailing)  # out of range: refused
    output, options = _output(config, output, endpoint_url, anon, profile, as_json)
    try:
        con = connect(output, options)  # one listing and one set of views for the text and the page
        data = build_report(output, options, top=top, depth=depth, runs=runs, con=con)
    except QueryError as exc:
        raise refuse(exc.code, str(exc), as_json, status=1) from exc
    if html is not None:
        from jobs.report.html import ReportError, write_html_report

        try:
            write_html_report(output, html, options, top=top, trailing=trailing, depth=depth, con=con)
        except (QueryError, ReportError) as exc:
            raise refuse(exc.code, f"cannot write the HTML report: {exc}", as_json) from exc
        console.print(f"HTML report: {escape(str(html))}", soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    print_report(data)


def register(app: typer.Typer) -> None:
    app.command("query")(query)
    app.command("report")(report)
