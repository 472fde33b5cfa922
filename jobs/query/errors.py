"""How ``query`` and ``report`` fail: one ``query_failed`` line for the operator, never a traceback."""

from __future__ import annotations

from pipeline.errors import DeepfakeStreamError
from pipeline.logsafe import printable, redact_uris


class QueryError(DeepfakeStreamError):
    """The output cannot be read or the SQL failed (the message is one line, for the operator)."""

    code = "query_failed"


class QueryStopped(QueryError):
    """The query was stopped before it ended (``jobs/query/stop.py``); ``status``: the exit status it calls for."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def failure(message: str) -> QueryError:
    """QueryError ``message`` as the operator sees it: no credentials in its URIs (the output as typed, a part's
    URI), no control characters (a corrupt part's bytes end up in DuckDB's message)."""
    return QueryError(printable(redact_uris(message)))


def sql_error(exc: Exception) -> QueryError:
    """DuckDB's error as one line of at most 500 characters."""
    return failure(" ".join(str(exc).split())[:500] or type(exc).__name__)
