"""What every ``towerflow`` command shares: the ``--root`` / ``--json`` options, Prefect's
environment defaults, logging set-up, the error to raise (``fail``) and opening the store.

Command modules import this module, never ``cli.app`` (which imports them).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from cli.errors import CommandError
from core.cpus import apply_openmp_defaults

if TYPE_CHECKING:
    from storage import VersionStore

__all__ = [
    "PREFECT_DEFAULTS",
    "JsonOpt",
    "RootOpt",
    "apply_openmp_defaults",
    "apply_prefect_defaults",
    "fail",
    "global_options",
    "open_store",
    "root_path",
    "setup_logging",
]

RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Artifact store root (default: $TOWERFLOW_ROOT or ./.towerflow).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

# Prefect defaults that matter offline and on small machines (see README): no telemetry,
# room for the temporary server's cold start, and our loggers in the flow run's logs
# (the package roots, plus core.progress's "towerflow.progress"). The environment wins.
PREFECT_DEFAULTS: Final = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "model,storage,core,tasks,cli,towerflow",
}

# OpenMP wait policy for torch's and Faiss's runtimes (core.cpus.OPENMP_DEFAULTS): set by
# cli.app and bench.__main__ when they are imported, before any command loads torch or Faiss.
# Re-exported here so every entry point takes it from the same place.

DebugOpt = Annotated[
    bool,
    typer.Option(
        "--debug",
        help="On failure, print the full traceback too (also TOWERFLOW_DEBUG=1); may also "
        "follow the command name.",
    ),
]


def global_options(debug: DebugOpt = False) -> None:
    """Two-tower candidate retrieval: train, index, publish and query versions.

    A failure prints one `error: ...` line (with --json: one JSON object on stdout) and
    exits with a code per kind: 2 usage/config, 3 not found, 4 corrupt version, 5 quality
    gate, 6 read-only/permission, 7 disk full, 8 no Prefect server, 9 conflict, 1 other.
    """
    # `--debug` is read from the command line by cli.errors.TowerflowGroup (wherever it
    # stands); the option is declared here for --help.


def apply_prefect_defaults() -> None:
    """Set each of ``PREFECT_DEFAULTS`` that the environment does not set already (before
    Prefect is imported: it reads its settings once)."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def setup_logging(verbose: bool) -> None:
    """INFO logs to stderr when ``verbose``, else warnings only; quiet chatty libraries."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP call to Prefect's API drowns the run's own messages.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def fail(message: str, code: int | None = None) -> CommandError:
    """The error to raise for a failure the command words itself (``raise fail(msg) from
    None`` in an ``except`` block): printed by ``cli.errors.TowerflowGroup`` as one
    ``error: message`` line (JSON with ``--json``). The exit code is ``code``, else that of
    the exception being handled (``cli.errors.classify``: 4 for a corrupt version, ...),
    else 1."""
    return CommandError(message, code, sys.exc_info()[1])


def root_path(root: Path | None, cfg_root: str | None = None) -> Path:
    """The store root of a command: ``--root``, else the config file's
    ``runtime.storage_root``, else ``$TOWERFLOW_ROOT``, else ``./.towerflow`` (absolute;
    the rule is ``core.store.resolve_root``)."""
    from core.store import resolve_root

    return resolve_root(root, cfg_root)


def open_store(root: Path | None, cfg_root: str | None = None) -> VersionStore:
    """The version store at ``root_path(root, cfg_root)``, keeping
    ``$TOWERFLOW_KEEP_VERSIONS`` (default 5) versions."""
    from core.store import open_store as open_root

    return open_root(root, cfg_root=cfg_root)
