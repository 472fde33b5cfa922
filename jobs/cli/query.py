"""``query`` (DuckDB SQL over a scan's output) and ``report`` (its text summary)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from jobs.cli.common import AnonOpt, ConfigOpt, EndpointOpt, ProfileOpt, console, refuse, settings_from_cli
from jobs.cli.logs import setup_logging
from jobs.scan.config import DEFAULT_OUTPUT

OUTPUT_HELP = "; unset: scan.output of --config / DFS_SCAN__OUTPUT, where `scan` writes"


def _output(config: Optional[Path], output: Optional[str], endpoint_url: Optional[str], anon: bool,
            profile: Optional[str], as_json: bool = False) -> tuple[str, dict]:
    """The output and its fsspec options from the settings' ``scan`` section, resolved as ``scan`` resolves them
    (flags > DFS_SCAN__* > config file > defaults), so these commands read where a scan so configured wrote."""
    flags = dict(output=output, endpoint_url=endpoint_url, anon=anon or None, profile=profile)
    scan = settings_from_cli(config, as_json=as_json, **{f"scan.{k}": v for k, v in flags.items()}).scan
    return scan.output, scan.storage_options(scan.output)


def query(
    sql: str = typer.Argument(..., help="SQL over the views `videos`, `faces` (latest verdicts), `videos_history`, `faces_history` and `runs` (one row per scan)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", show_default=DEFAULT_OUTPUT, help=f"scan output to query (fsspec URI or folder){OUTPUT_HELP}"),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Run DuckDB SQL over a scan's Parquet output and print the result."""
    setup_logging(False)
    from jobs.query.sql import QueryError, format_rows, run_query
    from pipeline.logsafe import printable
    from jobs.report.text import cell, stdout_console

    if fmt not in ("table", "csv", "json"):
        raise refuse("invalid_configuration", f"unknown --format {fmt!r}: use table, csv or json")
    output, options = _output(config, output, endpoint_url, anon, profile)
    try:
        columns, rows = run_query(output, sql, options)
    except QueryError as exc:
        raise refuse(exc.code, str(exc), status=1) from exc
    if fmt == "table":
        from rich.table import Table

        table = Table(*(escape(printable(c)) for c in columns), box=None, padding=(0, 2), header_style="bold")
        for row in rows:  # cell: never read as markup, control characters written out (pipeline/logsafe.py)
            table.add_row(*(cell(v) for v in row))
        stdout_console().print(table)
        console.print(f"{len(rows)} row(s)")
    else:
        sys.stdout.write(format_rows(columns, rows, fmt))


def report(
    output: Optional[str] = typer.Argument(None, show_default=DEFAULT_OUTPUT, help=f"scan output (fsspec URI or folder){OUTPUT_HELP}"),
    top: int = typer.Option(10, "--top", min=1, help="how many suspicious objects to list"),
    depth: Optional[int] = typer.Option(None, "--depth", min=0, help="group by the first N path levels (bucket counts as one) instead of the parent folder"),
    runs: int = typer.Option(10, "--runs", min=0, help="how many recent scans (run records) to list"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write a self-contained HTML page (plots, thumbnails, drift) to this file"),
    trailing: int = typer.Option(7, "--trailing", min=1, help="earlier scans the latest is compared with for drift"),
    endpoint_url: Optional[str] = EndpointOpt,
    anon: bool = AnonOpt,
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Summarise a scan's output: fake rate per prefix and day, the most suspicious objects, errors, recent runs."""
    setup_logging(False, as_json)
    from jobs.query.sql import QueryError, connect
    from jobs.report.text import print_report, report as build_report

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
