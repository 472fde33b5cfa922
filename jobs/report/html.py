"""``report --html``: one self-contained page per scan output (inline CSS, plots and face thumbnails as
data: URIs), readable offline and safe to mail around."""

from __future__ import annotations

import base64
import posixpath
from datetime import datetime, timezone
from pathlib import Path

from jobs.report.data import ReportData, load
from jobs.report.queries import TOP_PREFIXES, WINDOW_DAYS
from pipeline.thumbs import data_uri
from jobs.report.version import package_version
from pipeline.atomic import write_atomic
from pipeline.errors import DeepfakeStreamError, one_line


class ReportError(DeepfakeStreamError):
    """The HTML report cannot be made (its extra is not installed, a plot or the page cannot be drawn, or the page
    cannot be written)."""

    code = "report_failed"


def _png_uri(fig) -> str:
    from jobs.report.plots import png

    return "data:image/png;base64," + base64.b64encode(png(fig)).decode("ascii")


def render(d: ReportData) -> str:
    """The page for already-loaded report data."""
    try:
        import jinja2

        from jobs.report import describe, plots
    except ImportError as exc:
        raise ReportError(f"the HTML report needs matplotlib and jinja2: pip install 'deepfakestream[report]' ({exc})") from exc
    from jobs.report.template import CSP, PAGE

    try:
        words = {  # each plot's alt text (describe.py): what it shows for this output, not what kind of plot it is
            "runs": describe.runs_alt(d.runs) if d.runs else None,
            "fake_rate": describe.fake_rate_alt(d.days) if d.days else None,
            "scores": describe.score_days_alt(d.score_days, d.thresholds) if d.score_days else None,
            "drift": describe.drift_alt(d.drift),
        }
        pictures = {
            "runs": _png_uri(plots.runs_plot(d.runs)) if d.runs else None,
            "fake_rate": _png_uri(plots.fake_rate_plot(d.days)) if d.days else None,
            "scores": _png_uri(plots.score_days_plot(d.score_days, d.thresholds)) if d.score_days else None,
            "drift": _png_uri(plots.drift_plot(d.drift, d.thresholds)) if d.drift.latest.scores else None,
        }
        suspects = [{
            **vars(s),
            "thumbs": [(describe.thumb_alt(score), score, data_uri(jpeg)) for score, jpeg in s.thumbs],
            "alt": describe.timeline_alt(posixpath.basename(s.uri), s.timeline, d.thresholds) if s.timeline else None,
            "people": describe.timeline_people(s.timeline, d.thresholds),
            "timeline": (_png_uri(plots.timeline_plot(s.timeline, d.thresholds, posixpath.basename(s.uri)))
                         if s.timeline else None),
        } for s in d.suspects]
        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        return env.from_string(PAGE).render(
            d=d, plots=pictures, alts=words, drift_bins=describe.drift_bins(d.drift), suspects=suspects,
            pct=describe.pct, num=describe.num, version=package_version(), window=WINDOW_DAYS,
            top_prefixes=TOP_PREFIXES, csp=CSP,
            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    except Exception as exc:  # noqa: BLE001 - matplotlib or jinja2 choking on some data: one line, not a trace
        raise ReportError(f"cannot draw the report: {one_line(exc)}") from None


def html_report(output: str, storage_options: dict | None = None, top: int = 8, trailing: int = 7,
                depth: int | None = None, con=None) -> str:
    """The page for the scan output at ``output`` (QueryError when it cannot be read, ReportError when it cannot
    be drawn); ``con``: a connection to it already open."""
    from jobs.report.queries import read_report

    return render(read_report(output, storage_options,
                              lambda con: load(con, output, top=top, trailing=trailing, depth=depth), con))


def write_html_report(output: str, path: str | Path, storage_options: dict | None = None, top: int = 8,
                      trailing: int = 7, depth: int | None = None, con=None) -> Path:
    """Write the page to ``path`` (a local file) and return it."""
    page = html_report(output, storage_options, top=top, trailing=trailing, depth=depth, con=con)
    path = Path(path)
    try:
        write_atomic(path, page.encode("utf-8"))  # a full disk leaves the last good page, never half of a new one
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc}") from exc
    return path
