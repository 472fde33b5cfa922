"""What every command shares (jobs/cli/common.py): under --json a usage error is a refusal like any other, one JSON
line on stdout, through every way in (CliRunner, `python -m jobs.cli`, the `deepfakestream` console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app

USAGE = [(["score", "--json", "--frames", "abc", "x.jpg"], "--frames"),  # a word where a number goes
         (["score", "--json", "--no-such-flag", "x.jpg"], "--no-such-flag"),  # an unknown option
         (["score", "--json"], "'paths'"),  # a missing argument
         (["report", "--json", "--top", "many"], "--top"),
         (["scan", "--json", "--max-objects", "abc", "src"], "--max-objects"),
         (["--json", "nosuch"], "--json")]  # before the command: the group's own parse


@pytest.mark.parametrize("args, named", USAGE)
def test_a_usage_error_under_json_is_one_json_line(args, named):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    said = json.loads(result.stdout)  # exactly one line: json.loads refuses two
    assert said["error_code"] == "invalid_configuration" and named in said["error"] and set(said) == {"error_code", "error"}
    assert result.stderr == f"invalid_configuration: {said['error']}\n"  # refuse's line, not typer's usage box


@pytest.mark.parametrize("args, named", USAGE[:4])
def test_without_json_a_usage_error_is_typers_usage_message(args, named):
    args = [a for a in args if a != "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.stdout == ""
    assert "Usage:" in result.stderr and "invalid_configuration" not in result.stderr


def test_the_entry_points_answer_usage_errors_in_json_too():
    """`python -m jobs.cli` and the console script pyproject installs (jobs.cli:app) go through the same group."""
    script = Path(sys.executable).with_name("deepfakestream")
    for command in ([sys.executable, "-m", "jobs.cli"], *([[str(script)]] if script.exists() else [])):
        proc = subprocess.run([*command, "score", "--json", "--frames", "abc", "x.jpg"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "DFS_LOG_LEVEL": ""})
        assert proc.returncode == 2, proc.stderr
        assert json.loads(proc.stdout)["error_code"] == "invalid_configuration" and "Usage:" not in proc.stderr


@pytest.mark.parametrize("args, env, named", [
    (["score", "--json", "x.jpg"], {"DFS_CLASSIFY__THRESHOLD": "2"}, "classify.threshold"),
    (["scan", "--json", "src", "--commit-every", "0", "--thumbnails", "40"], {}, "scan.commit_every"),
    (["serve"], {"DFS_SERVE__HOST": ""}, "serve.host")])
def test_a_bad_setting_is_one_line_naming_it_where_it_came_from_and_what_it_got(args, env, named, monkeypatch):
    """pydantic's own text spans lines (`1 validation error for Settings`, the key, `[type=…, input_value=…]`): the
    last line of stderr, which a scheduler or log alert reads, carried no code."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    (said,) = result.stderr.splitlines()
    assert said.startswith(f"invalid_configuration: {named}: ") and "(got " in said and "[type=" not in said, said
    assert ("environment variable" if env else "command-line flags") in said


RAY_SAYS = """
import os, sys
from jobs.cli.common import stdout_to_stderr
print("before", flush=True)
with stdout_to_stderr():
    print("(raylet) A worker died or was killed while executing a task")  # Ray's print_to_stdstream: sys.stdout
    os.write(1, b"(raylet) at the descriptor\\n")  # a child process or C code writing fd 1
print('{"status": "succeeded"}')
"""


def test_while_ray_runs_under_json_stdout_holds_nothing_but_the_json():
    """Ray prints its raylet's error messages (a worker killed, a task failed) on stdout whatever log_to_driver says:
    `scan --json`'s stdout held them before its JSON line, and no longer parsed."""
    done = subprocess.run([sys.executable, "-c", RAY_SAYS], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["before", '{"status": "succeeded"}']
    assert "(raylet) A worker died" in done.stderr and "(raylet) at the descriptor" in done.stderr


def test_with_stdout_closed_the_redirection_stands_aside():
    """`scan … >&-`: Python starts with sys.stdout None; the redirection crashed every scan (scan_crashed) before it
    began, with --json or without."""
    code = ("import sys\nfrom jobs.cli.common import stdout_to_stderr\n"
            "for on in (False, True):\n    with stdout_to_stderr(on):\n        print('ran', on, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[3], pass_fds=(), close_fds=True,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 0 and done.stderr.splitlines() == ["ran False", "ran True"], done.stderr
