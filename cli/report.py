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
    from core.report_data import load_version_report, report_sections
    from core.report_render import to_html
    from core.reports import write_html_report
    from storage import Layout, VersionStore, atomic_write_bytes
    from storage.errors import StorageError
    from storage.manifest import utc_now_iso

    layout = Layout(root_path(root))
    try:
        inputs = load_version_report(VersionStore(layout), version)
    except (StorageError, ValueError, OSError) as e:
        raise fail(f"cannot read the report of {version or 'CURRENT'}: {e}") from None
    if out is None:
        path = write_html_report(layout, inputs)
    else:
        if out.is_dir():
            out = out / f"{inputs.version_id}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        html = to_html(report_sections(inputs), inputs.plots, utc_now_iso())
        atomic_write_bytes(out, html.encode("utf-8"))
        path = out
    missing = 3 - len(inputs.plots)
    if missing:
        typer.secho(
            f"note: {missing} plot(s) missing (versions built before reports existed, or a "
            "run without validation / history)",
            err=True,
        )
    typer.echo(str(path.resolve()))
