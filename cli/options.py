"""Options shared by the ``towerflow`` commands (kept apart so command modules that
``cli.app`` imports can use them without a circular import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["JsonOpt", "RootOpt"]

RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Artifact store root (default: $TOWERFLOW_ROOT or ./.towerflow).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
