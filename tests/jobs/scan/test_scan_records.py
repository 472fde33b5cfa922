"""Run records (jobs/scan/records.py) as the `runs` view of `query`: every field of a record is a column."""

from __future__ import annotations

from datetime import datetime, timezone

from jobs.scan.records import RunRecord, runs_table


def test_every_field_of_a_record_is_a_column_of_the_runs_view():
    record = RunRecord(scan_id="s1", source="s3://b/in/", output="/out", started_at=datetime.now(timezone.utc),
                       model_version="m", settings_digest="d", labels={"FAKE": 2, "REAL": 1, "ERROR": 1})
    table = runs_table([record])
    mapped = {"labels": {"fakes", "reals", "no_face", "failed"}, "record_version": set()}  # counts by label; internal
    for name in RunRecord.model_fields:
        assert mapped.get(name, {name}) <= set(table.column_names), name
    row = table.to_pylist()[0]
    assert (row["host"], row["pid"], row["fakes"], row["failed"]) == (record.host, record.pid, 2, 1)
