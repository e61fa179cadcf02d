"""``towerflow report [VERSION]``: one self-contained HTML file with the version's run
report (data, training curve, metrics vs baselines and oracle, change vs the previous
version, index, metric history, plots embedded). Needs no Prefect server.

Register with ``app.command("report")(report_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import RootOpt, fail, root_path

__all__ = ["report_command"]


def report_command(
    version: Annotated[
        str | None, typer.Argument(help="Version id (default: CURRENT).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="HTML file to write (default: <root>/reports/<version>.html).",
            show_default=False,
        ),
    ] = None,
    root: RootOpt = None,
) -> None:
    """Write a version's run report as one HTML file and print its path."""
    from core.reports import write_version_report
    from storage.errors import StorageError

    which = version or "CURRENT"
    try:
        written, missing = write_version_report(root_path(root), version, out)
    except (StorageError, ValueError) as e:  # exit 3 unknown version, 4 corrupt, ...
        raise fail(f"cannot read the report of {which}: {e}") from None
    except OSError as e:  # exit 6 unwritable --out or store, 7 disk full, ...
        raise fail(f"cannot write the report of {which}: {e}") from None
    if missing:
        typer.secho(
            f"note: {missing} plot(s) missing (versions built before reports existed, or a "
            "run without validation / history)",
            err=True,
        )
    if written.shared:
        typer.secho(f"shared as {written.shared}", err=True)
    typer.echo(str(written.path.resolve()))
