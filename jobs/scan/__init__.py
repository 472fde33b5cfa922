"""The nightly batch scan: list a bucket, run the graph on Ray Data, commit Parquet parts (docs/scan.md)."""
