"""Running ``towerflow`` for the corruption matrix (in this process or as a user does)
and reading what it printed: exit code, ``error:`` lines, the kind of damage named."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CliResult",
    "CliRunnerFn",
    "cli_in_process",
    "cli_subprocess",
    "reason_of",
    "refusal",
    "shorten",
]

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class CliResult:
    """What one ``towerflow`` command did: exit code and its two streams."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    @property
    def clean_failure(self) -> bool:
        """Non-zero exit, one ``error:`` line, no traceback, nothing on stdout."""
        text = self.stdout + self.stderr
        return (
            self.code != 0
            and len(self.error_lines) == 1
            and "Traceback" not in text
            and not self.stdout.strip()
        )


CliRunnerFn = Callable[[list[str]], CliResult]


def cli_in_process(args: list[str]) -> CliResult:
    """``towerflow ARGS`` through typer's test runner, in this process (same app)."""
    from typer.testing import CliRunner

    from cli.app import app

    res = CliRunner().invoke(app, args)
    return CliResult(res.exit_code, res.stdout, res.stderr)


def cli_subprocess(args: list[str]) -> CliResult:
    """``towerflow ARGS`` as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "TOWERFLOW_DEBUG"}
    proc = subprocess.run(
        [str(BIN / "towerflow"), *args], capture_output=True, text=True, env=env, timeout=300
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def shorten(text: str, root: Path, labels: dict[str, str]) -> str:
    """``text`` with the store root, version ids and SHA-256 digests abbreviated."""
    text = text.replace(str(root), "<root>")
    for vid, label in labels.items():
        text = text.replace(vid, label)
    return re.sub(r"\b([0-9a-f]{8})[0-9a-f]{56}\b", r"\1…", text)


def reason_of(message: str) -> str:
    """The kind of damage a ``CorruptVersionError`` message reports, in a few words."""
    m = re.search(r"file '([^']+)'", message)
    name = m[1] if m else "?"
    if "has sha256" in message:
        return f"{name}: wrong sha256"
    if re.search(r"has \d+ bytes, manifest says", message):
        return f"{name}: wrong size"
    if "missing" in message:
        return f"{name}: missing"
    if "manifest" in name:
        return f"{name}: unreadable"
    return message[:60]


def refusal(res: CliResult) -> str:
    """A failed command in a few words: exit code and what its ``error:`` line names."""
    if not res.clean_failure:
        return f"exit {res.code}, {len(res.error_lines)} `error:` lines" + (
            ", traceback" if "Traceback" in res.stdout + res.stderr else ""
        )
    return f"exit {res.code} ({reason_of(res.error_lines[0])})"
