"""What `towerflow run` prints on a terminal: progress bars and the results by default,
each step's messages once with -v, debug lines with -vv."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.e2e]

# "2026-12-03 13:12:01,628 INFO prefect.task_runs: message" (cli.options.setup_logging).
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)$")


def _run(root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`towerflow run` in a child process against the session's Prefect server (no
    temporary server of its own: seconds, not 15 s)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": "100"}
    env.pop("TOWERFLOW_VERBOSE", None)
    cmd = [sys.executable, "-m", "cli", *flags, "run", "--scale", "tiny", "--epochs", "2"]
    return subprocess.run(
        [*cmd, "--root", str(root)], capture_output=True, text=True, env=env, timeout=300
    )


def _logs(stderr: str) -> list[tuple[str, str, str]]:
    return [m.groups() for line in stderr.splitlines() if (m := _LOG_LINE.match(line))]


def test_default_output_is_progress_and_results_only(prefect_harness: None, tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert _logs(done.stderr) == []  # no log lines, not even Prefect's
    assert "train (epochs)" in done.stderr  # the progress bars
    assert re.search(r"^published version v\S+ in [\d.]+ s$", done.stdout, re.M)
    assert "model recall@50:" in done.stdout


def test_verbose_shows_each_step_once(prefect_harness: None, tmp_path: Path) -> None:
    done = _run(tmp_path, "-v")
    assert done.returncode == 0, done.stderr
    logs = _logs(done.stderr)
    messages = Counter(message for _, _, message in logs)
    assert [m for m, n in messages.items() if n > 1] == []
    assert {level for level, _, _ in logs} <= {"INFO", "WARNING"}
    text = "\n".join(messages)
    # One line per epoch (the training loop's own line is debug), one per step.
    assert len(re.findall(r"epoch 1/2", text)) == 1
    assert len(re.findall(r"published version", text)) == 1
    assert len(re.findall(r"^threads: ", text, re.M)) == 1  # every step applies it
    assert "Finished in state Completed()" not in text
    assert "wrote table" not in text  # storage's per-file lines are debug


def test_very_verbose_adds_debug_lines(prefect_harness: None, tmp_path: Path) -> None:
    done = _run(tmp_path, "-vv")
    assert done.returncode == 0, done.stderr
    logs = _logs(done.stderr)
    assert any(level == "DEBUG" and "wrote table" in msg for level, _, msg in logs)
    assert any("Finished in state Completed()" in msg for _, _, msg in logs)
