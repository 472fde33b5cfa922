"""bench/long_video.py: its clips come from ../shared, or from DFS_SHARED_DATA where that points."""

import sys

from helpers import load_bench


def test_media_default_follows_dfs_shared_data(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DFS_SHARED_DATA", str(tmp_path))  # an empty folder: both clips are reported missing there
    monkeypatch.setattr(sys, "argv", ["bench/long_video.py", "--times", "1", "--repeats", "1"])
    load_bench("long_video").main()
    rows = [line for line in capsys.readouterr().out.splitlines() if "missing under" in line]
    assert len(rows) == 2 and all(f"missing under {tmp_path} " in row for row in rows), rows
