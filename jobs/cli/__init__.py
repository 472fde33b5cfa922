"""``deepfakestream`` command line: one Typer app, one module per command group (score, scan, query and
report, serve, training). Heavy libraries (torch, Ray, DuckDB) load inside the commands."""

from jobs.cli import query, scan, score, serve, training
from jobs.cli.common import app

for _group in (score, scan, query, serve, training):  # the order of `deepfakestream --help`
    _group.register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]
