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

from cli.errors import CommandError, verbosity
from core.cpus import apply_openmp_defaults

if TYPE_CHECKING:
    from storage import VersionStore

__all__ = [
    "PREFECT_DEFAULTS",
    "JsonOpt",
    "ProtocolOpt",
    "RootOpt",
    "ScaleOpt",
    "SplitSeedOpt",
    "ThreadsOpt",
    "apply_openmp_defaults",
    "apply_prefect_defaults",
    "fail",
    "global_options",
    "open_store",
    "root_path",
    "setup_logging",
]

RootOpt = Annotated[
    # A string: an object-store root (s3://bucket/prefix) is not a path.
    str | None,
    typer.Option(
        "--root",
        help="Artifact store root, a folder or s3://BUCKET/PREFIX (default: $TOWERFLOW_ROOT "
        "or ./.towerflow).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
# Options shared by the commands that train (run, evaluate, tune): one wording each.
ScaleOpt = Annotated[
    str | None,
    typer.Option(
        help="Synthetic data scale: tiny, small, medium, large (default: the config's "
        "data.scale, else small).",
        show_default=False,
    ),
]
ProtocolOpt = Annotated[
    str | None,
    typer.Option(
        help="Split: temporal, random_ratio or leave_one_out (default: the config's "
        "data.protocol, else temporal).",
        show_default=False,
    ),
]
SplitSeedOpt = Annotated[
    int | None,
    typer.Option(
        help="Seed of the random split (random_ratio, leave_one_out ties; default: the "
        "config's data.split_seed, else 0).",
        show_default=False,
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        help="torch / Faiss threads (default: runtime.threads, else $TOWERFLOW_THREADS, "
        "else the CPUs this process may use, adapting to the load).",
        show_default=False,
    ),
]

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


VerboseOpt = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="More log lines on stderr: -v for each step's INFO messages, -vv for debug "
        "(also TOWERFLOW_VERBOSE=1|2); may also follow the command name. Default: "
        "warnings and errors only, with progress bars and results.",
        show_default=False,
    ),
]


def global_options(debug: DebugOpt = False, verbose: VerboseOpt = 0) -> None:
    """Two-tower candidate retrieval: train, index, publish and query versions.

    A failure prints one `error: ...` line (with --json: one JSON object on stdout) and
    exits with a code per kind: 2 usage/config, 3 not found, 4 corrupt version, 5 quality
    gate, 6 read-only/permission, 7 disk full, 8 no Prefect server, 9 conflict, 10 a step
    past its time limit, 1 other.
    """
    # `--debug` and `-v` are read from the command line by cli.errors.TowerflowGroup
    # (wherever they stand); the options are declared here for --help.


def apply_prefect_defaults() -> None:
    """Set each of ``PREFECT_DEFAULTS`` that the environment does not set already (before
    Prefect is imported: it reads its settings once)."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr: warnings and errors by default, INFO with ``-v`` (or when
    ``verbose``: a long-running server's default), DEBUG with ``-vv``; quiet chatty
    libraries. Prefect's own console handlers follow the same level."""
    count = verbosity()
    level = logging.DEBUG if count >= 2 else logging.INFO if count or verbose else logging.WARNING
    root = logging.getLogger()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(level)
    # Prefect's run loggers have their own level (INFO) and propagate to the root: only
    # the terminal handlers' level keeps their lines off a quiet terminal. Prefect's API
    # handler (the run's logs in the UI) sits on its own loggers and still gets INFO.
    for handler in root.handlers:
        handler.setLevel(level)
        if level > logging.DEBUG and not any(
            isinstance(f, _RoutineStates) for f in handler.filters
        ):
            handler.addFilter(_RoutineStates())
    # One line per HTTP call to Prefect's API drowns the run's own messages.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


class _RoutineStates(logging.Filter):
    """Drops Prefect's "Finished in state Completed()" line of every task and flow run from
    the terminal below -vv (the run's logs in the UI keep them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name.startswith("prefect.")
            and record.levelno == logging.INFO
            and record.getMessage() == "Finished in state Completed()"
        )


def fail(message: str, code: int | None = None) -> CommandError:
    """The error to raise for a failure the command words itself (``raise fail(msg) from
    None`` in an ``except`` block): printed by ``cli.errors.TowerflowGroup`` as one
    ``error: message`` line (JSON with ``--json``). The exit code is ``code``, else that of
    the exception being handled (``cli.errors.classify``: 4 for a corrupt version, ...),
    else 1."""
    return CommandError(message, code, sys.exc_info()[1])


def root_path(root: str | Path | None, cfg_root: str | None = None) -> Path:
    """The store root of a command: ``--root``, else the config file's
    ``runtime.storage_root``, else ``$TOWERFLOW_ROOT``, else ``./.towerflow`` (absolute;
    the rule is ``core.store.resolve_root``)."""
    from core.store import resolve_root

    return resolve_root(root, cfg_root)


def open_store(root: str | Path | None, cfg_root: str | None = None) -> VersionStore:
    """The version store at ``root_path(root, cfg_root)``, keeping
    ``$TOWERFLOW_KEEP_VERSIONS`` (default 5) versions."""
    from core.store import open_store as open_root

    return open_root(root, cfg_root=cfg_root)
