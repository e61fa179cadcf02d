"""`towerflow api`: its options, and settings validated before anything starts (the
server itself runs in test_loadgen.py, which starts `python -m cli api`)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


def test_api_help_lists_its_options() -> None:
    result = runner.invoke(app, ["api", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--root", "--poll-interval", "--threads"):
        assert option in result.stdout


def test_api_rejects_bad_settings_before_serving(tmp_path: Path) -> None:
    result = runner.invoke(app, ["api", "--port", "70000", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "invalid api settings" in result.stderr and "port" in result.stderr
