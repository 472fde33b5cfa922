"""Which SQL ``query`` runs: one statement that only reads, as DuckDB's own parser and tokenizer see it."""

from __future__ import annotations

from jobs.query.errors import QueryError, sql_error

READ_ONLY = "one read-only statement (SELECT, WITH … SELECT, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"


def _keywords(sql: str) -> set[str]:
    """The SQL keywords of ``sql`` as DuckDB's tokenizer reads them (comments and strings are other tokens)."""
    import duckdb

    tokens = duckdb.tokenize(sql)
    ends = [start for start, _ in tokens[1:]] + [len(sql)]
    return {sql[start:end].strip().upper() for (start, kind), end in zip(tokens, ends) if kind.name == "keyword"}


def check_read_only(sql: str) -> None:
    """QueryError unless ``sql`` is exactly one statement that only reads.

    ``query`` and ``report`` only read (docs/scan.md), but DuckDB runs COPY … TO, CREATE, ATTACH, SET or several
    statements as readily (a COPY into the output rewrote its verdicts). DuckDB types DESCRIBE, SHOW and SUMMARIZE
    as SELECT; PRAGMA and CALL are refused (some write or change settings; ``SELECT * FROM pragma_version()``
    reads the same), and EXPLAIN without ANALYZE (which runs what it explains; plain EXPLAIN only plans). The
    keywords come from DuckDB's tokenizer, not a pattern: a comment must not hide one. ``run_query`` also locks
    DuckDB's configuration, so a table function that changes it (``enable_logging`` writes files) is refused.
    """
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
        kinds = [s.type.name for s in statements]
        if kinds == ["EXPLAIN"]:
            kinds = ["EXPLAIN ANALYZE" if _keywords(sql) & {"ANALYZE", "ANALYSE"} else "SELECT"]
    except duckdb.Error as exc:  # a syntax error: the line executing it would give
        raise sql_error(exc) from None
    if not kinds:
        raise QueryError(f"no SQL to run: give {READ_ONLY}")
    if len(kinds) > 1:
        raise QueryError(f"query takes {READ_ONLY}; got {len(kinds)} statements")
    if kinds != ["SELECT"]:
        raise QueryError(f"query takes {READ_ONLY}; got {kinds[0]}")
