"""bench/bench_common.py: --write-docs only from a quiet machine, the command line recorded in full, ../shared's place."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, load_bench


def _args(**kw):
    return argparse.Namespace(**{"max_load": -1.0, "settle_s": 0, "write_docs": None, "force": False, **kw})


def test_write_docs_is_refused_above_max_load_unless_forced(capsys, tmp_path):
    common = load_bench("bench_common")
    with pytest.raises(SystemExit) as refused:  # any load is above -1
        common.quiet_load(_args(write_docs=tmp_path / "benchmarks.md"))
    assert refused.value.code == 2
    assert capsys.readouterr().err.startswith("machine_busy: 1-minute load average ")
    assert len(common.quiet_load(_args(write_docs=tmp_path / "b.md", force=True))) == 3
    assert "warning: 1-minute load average" in capsys.readouterr().err
    common.quiet_load(_args())  # nothing to write: a warning, the numbers are printed
    assert "warning:" in capsys.readouterr().err
    common.quiet_load(_args(max_load=1e9, write_docs=tmp_path / "b.md"))  # a quiet machine
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bench", ["scan", "serve", "serve_load"])
def test_every_bench_that_writes_docs_refuses_a_busy_machine_before_it_starts(bench, tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    run = subprocess.run([sys.executable, f"bench/{bench}.py", "--max-load", "-1", "--write-docs", str(docs)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines()[-1].startswith("machine_busy: "), run.stderr
    assert docs.read_text() == "# Benchmarks\n" and sorted(tmp_path.iterdir()) == [docs]  # no temp folder left


def test_command_line_is_every_argument_as_run(monkeypatch):
    common = load_bench("bench_common")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "scan.py"), "4", "--scan-args", "--fused-actors 2",
                                      "--sample-every", "0.5"])
    assert common.command_line() == "bench/scan.py 4 --scan-args '--fused-actors 2' --sample-every 0.5"


def test_shared_data_follows_dfs_shared_data(monkeypatch, tmp_path):
    common = load_bench("bench_common")
    monkeypatch.delenv("DFS_SHARED_DATA", raising=False)
    assert common.shared_data() == ROOT.parent / "shared" / "data"
    monkeypatch.setenv("DFS_SHARED_DATA", str(tmp_path))
    assert common.shared_data() == Path(tmp_path)
