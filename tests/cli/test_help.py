"""`--help` states a default for every option that takes a value (a switch such as
`--json` is off unless given)."""

from __future__ import annotations

import typer.main
from typer.testing import CliRunner

from cli.app import app


def _options_without_default() -> list[str]:
    missing: list[str] = []

    def walk(command: object, prefix: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{prefix}{name} ")
        for p in getattr(command, "params", []):
            if p.param_type_name != "option" or p.name == "help":
                continue
            if p.is_flag and not p.secondary_opts and p.default is False:
                continue  # a switch: off unless given
            shown = isinstance(p.show_default, str) and p.show_default
            shown = shown or (p.show_default is not False and p.default is not None)
            if not shown and "default" not in (p.help or "").lower():
                missing.append(f"{prefix.strip()} {'/'.join(p.opts)}")

    walk(typer.main.get_command(app), "")
    return missing


def test_every_option_states_its_default() -> None:
    assert _options_without_default() == []


def test_help_prints_defaults_written_in_brackets() -> None:
    """Plain-text help (no rich markup): "[default: ...]" is printed, not eaten as a tag."""

    def help_text(command: str) -> str:
        return " ".join(CliRunner().invoke(app, [command, "--help"]).output.split())

    assert "(default: the config's train.epochs, else 5)" in help_text("run")
    assert "[default: 127.0.0.1]" in help_text("api")
