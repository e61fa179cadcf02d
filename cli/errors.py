"""How every ``towerflow`` command fails: one ``error: ...`` line on stderr (with ``--json``,
one JSON object on stdout instead) and an exit code per kind of failure; the traceback
only with ``--debug`` (before or after the command) or ``TOWERFLOW_DEBUG=1``.

One mapping (``classify``) and one handler (``TowerflowGroup``, the app's click group,
around every command) serve every command. Exit codes (the README has the same table):

====  ============  ===========================================================================
code  kind          failures
====  ============  ===========================================================================
0                   success
1     error         anything else (a bug: ``--debug`` shows where)
2     usage         bad options, config or input: click usage errors, ``ValueError`` (pydantic
                    validation, ``core.precheck.ConfigCheckError``: bad index factory, cuda
                    without a GPU, ...)
3     not-found     no such version / CURRENT / snapshot / user, a missing file
4     corrupt       a version whose files do not match its manifest (``CorruptVersionError``)
5     quality-gate  the model or its index missed its target, nothing was published
                    (``QualityGateError``, ``IndexRecallError``)
6     permission    read-only store (``StoreReadOnlyError``), permission denied, read-only
                    file system
7     disk-full     no space left: ``OSError`` ENOSPC / EDQUOT, SQLite "database or disk is
                    full", a Faiss write error "No space left on device"
8     server        no Prefect server answers: ``PREFECT_API_URL`` unset or unreachable,
                    connection refused, the temporary server did not start
9     conflict      another nightly run holds the store (``OverlappingRunError``), CURRENT
                    moved during a publish or rollback (``PublishConflictError``)
10    timeout       a nightly step ran past its time limit (``StepTimeoutError``)
11    database      the store's PostgreSQL database cannot be reached, refused the
                    credentials, or its binding is invalid (``DatabaseError``)
====  ============  ===========================================================================

``--json`` errors: ``{"error": {"type": "QualityGateError", "kind": "quality-gate",
"message": "...", "exit_code": 5}}`` on stdout, so stdout holds exactly one JSON object
whether the command succeeded or not; the exit code says which.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import typer

# typer (0.29 here) vendors its own copy of click: its exceptions and contexts are these,
# not those of an installed `click` package.
from typer._click.core import Context
from typer._click.exceptions import ClickException, UsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup

__all__ = [
    "CommandError",
    "ExitCode",
    "Failure",
    "PrefectServerUnavailable",
    "TowerflowGroup",
    "classify",
    "debug_requested",
    "describe",
    "is_disk_full",
    "verbosity",
]

DEBUG_ENV: Final = "TOWERFLOW_DEBUG"
_DEBUG_KEY: Final = "towerflow.debug"
_JSON_KEY: Final = "towerflow.json"
_VERBOSE_KEY: Final = "towerflow.verbose"
VERBOSE_ENV: Final = "TOWERFLOW_VERBOSE"
# -v, -vv, ... and --verbose: how many times each raises the terminal's log level.
_VERBOSE_FLAGS: Final = {"--verbose": 1, **{"-" + "v" * n: n for n in range(1, 4)}}


class ExitCode(IntEnum):
    """The exit status of a failed command, one per kind of failure."""

    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    CORRUPT = 4
    QUALITY_GATE = 5
    PERMISSION = 6
    DISK_FULL = 7
    SERVER = 8
    CONFLICT = 9
    TIMEOUT = 10
    DATABASE = 11

    @property
    def kind(self) -> str:
        """``quality-gate`` for QUALITY_GATE, and so on."""
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class Failure:
    """What a command prints for a failure, and how it exits."""

    code: ExitCode
    type: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form: ``{"error": {"type", "kind", "message", "exit_code"}}``."""
        return {
            "error": {
                "type": self.type,
                "kind": self.code.kind,
                "message": self.message,
                "exit_code": int(self.code),
            }
        }


class PrefectServerUnavailable(RuntimeError):
    """No Prefect server answers where the command needs one."""


class CommandError(ClickException):
    """A failure a command explains itself (``cli.options.fail``): printed and mapped to an
    exit code by ``TowerflowGroup`` like any other failure. ``cause`` (the exception being
    handled when it was made) gives the exit code when ``code`` is None, and the traceback
    with ``--debug``."""

    def __init__(
        self, message: str, code: int | None = None, cause: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.cause = cause
        found = classify(cause) if cause is not None else None
        self.exit_code = int(code if code is not None else (found or ExitCode.ERROR))

    def format_message(self) -> str:
        """The message (click's ``Error: `` prefix and rich panel are not used here)."""
        return self.message


# -- the mapping -------------------------------------------------------------------------


def _loaded(module: str, name: str) -> type[BaseException] | None:
    """Class ``name`` of ``module`` if that module is imported (an exception of a module
    never imported cannot have been raised), so classifying loads nothing heavy."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _any(*classes: tuple[str, str]) -> Callable[[BaseException], bool]:
    def test(exc: BaseException) -> bool:
        return any(
            (cls := _loaded(module, name)) is not None and isinstance(exc, cls)
            for module, name in classes
        )

    return test


_DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def is_disk_full(exc: BaseException) -> bool:
    """No space left: an OS error, SQLite's "database or disk is full", or a C++ library's
    write error carrying the OS's "No space left on device" (Faiss's ``write_index``)."""
    if isinstance(exc, OSError):
        return exc.errno in _DISK_FULL_ERRNOS
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return "disk is full" in text or "disk full" in text
    return isinstance(exc, RuntimeError) and (
        "no space left on device" in text or "disk quota exceeded" in text
    )


def _permission(exc: BaseException) -> bool:
    if isinstance(exc, PermissionError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _READ_ONLY_ERRNOS
    return isinstance(exc, sqlite3.OperationalError) and "readonly database" in str(exc)


def _server(exc: BaseException) -> bool:
    if isinstance(exc, PrefectServerUnavailable | ConnectionError):
        return True
    if _any(("httpx", "TransportError"))(exc):
        return True
    # Prefect's client and its temporary server's start-up say so in a RuntimeError.
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "Failed to reach API" in text or "ephemeral Prefect API server" in text
    )


_missing: Final = _any(
    ("storage.errors", "VersionNotFoundError"),
    ("storage.errors", "NoCurrentVersionError"),
    ("storage.errors", "SnapshotNotFoundError"),
    ("core.recall_types", "UnknownUserError"),
)

# Ordered: the first rule that matches an exception wins (subclasses before bases).
_RULES: Final[tuple[tuple[ExitCode, Callable[[BaseException], bool]], ...]] = (
    (ExitCode.CORRUPT, _any(("storage.errors", "CorruptVersionError"))),
    (ExitCode.PERMISSION, _any(("storage.errors", "StoreReadOnlyError"))),
    (
        ExitCode.CONFLICT,
        _any(("storage.errors", "PublishConflictError"), ("core.lifecycle", "OverlappingRunError")),
    ),
    (
        ExitCode.QUALITY_GATE,
        _any(("core.evaluation", "QualityGateError"), ("core.indexing", "IndexRecallError")),
    ),
    (ExitCode.TIMEOUT, _any(("core.lifecycle", "StepTimeoutError"))),
    # Before SERVER: an unreachable database is a ConnectionError too, not Prefect's.
    (ExitCode.DATABASE, _any(("storage.database", "DatabaseError"))),
    (ExitCode.SERVER, _server),
    (ExitCode.NOT_FOUND, lambda e: isinstance(e, FileNotFoundError) or _missing(e)),
    (ExitCode.PERMISSION, _permission),
    (ExitCode.USAGE, lambda e: isinstance(e, ValueError | UsageError)),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or while handling (unless that was hidden
    with ``from None``), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        hidden = current.__suppress_context__
        current = current.__cause__ or (None if hidden else current.__context__)


def classify(exc: BaseException) -> ExitCode | None:
    """The exit code of a known failure, None for anything else.

    Disk full anywhere in the exception's chain wins (it is the cause, whatever wrapped
    it); otherwise the first exception of the chain, outermost first, that a rule knows.
    A ``CommandError`` keeps its own code.
    """
    if isinstance(exc, CommandError):
        try:
            return ExitCode(exc.exit_code)
        except ValueError:
            return None
    chain = list(_chain(exc))
    if any(is_disk_full(e) for e in chain):
        return ExitCode.DISK_FULL
    for e in chain:
        for code, matches in _RULES:
            if matches(e):
                return code
    return None


def _text(exc: BaseException) -> str:
    if isinstance(exc, ClickException):
        return exc.format_message()  # "Missing option '--user-id'." (str(): the param name)
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]  # str(KeyError) quotes its message
    if _loaded("pydantic", "ValidationError") is not None:  # else none was raised
        from pydantic import ValidationError

        from core.config import validation_summary

        if isinstance(exc, ValidationError):
            return f"invalid {exc.title}: {validation_summary(exc)}"
    return str(exc).strip() or type(exc).__name__


_HINTS: Final = {
    ExitCode.CORRUPT: "`towerflow verify` shows the damaged files; `towerflow rollback "
    "VERSION` serves an intact kept version",
    ExitCode.DISK_FULL: "free space on the store's disk and run again",
    ExitCode.DATABASE: "set TOWERFLOW_DATABASE_URL (or PGPASSWORD) to the store's database "
    "with its password, and check the server answers",
    ExitCode.SERVER: "start one (`prefect server start --host 127.0.0.1`) and export "
    "PREFECT_API_URL, or unset PREFECT_API_URL to use a temporary server",
}
_PREFIXES: Final = {ExitCode.DISK_FULL: "disk full", ExitCode.SERVER: "no Prefect server"}


def describe(exc: BaseException) -> Failure:
    """The exit code, type and one message for any exception (``classify``; ERROR with the
    exception's type name when no rule knows it)."""
    if isinstance(exc, CommandError):
        own = classify(exc) or ExitCode.ERROR
        name = type(exc.cause).__name__ if exc.cause is not None else type(exc).__name__
        return Failure(own, name, exc.message)
    code = classify(exc)
    if code is None:
        name, text = type(exc).__name__, _text(exc)
        said = f"{name}: {text}" if text != name else name
        return Failure(ExitCode.ERROR, name, f"{said} (run with --debug for the traceback)")
    message = _text(exc)
    prefix = _PREFIXES.get(code)
    if prefix and not message.lower().startswith(prefix):
        message = f"{prefix}: {message}"
    hint = _HINTS.get(code)
    if hint and "prefect server start" not in message:  # check_server says it already
        message = f"{message}; {hint}"
    return Failure(code, type(exc).__name__, message)


# -- the handler ---------------------------------------------------------------------------


def debug_requested(ctx: Context | None = None) -> bool:
    """``--debug`` was given (anywhere on the command line of ``ctx``, default the running
    command's) or ``TOWERFLOW_DEBUG`` is set."""
    ctx = ctx or get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_DEBUG_KEY):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def verbosity(ctx: Context | None = None) -> int:
    """How many ``-v`` the command line of ``ctx`` (default the running command's) gave,
    anywhere on it (``-vv`` counts 2), or ``TOWERFLOW_VERBOSE`` (a number) when none."""
    ctx = ctx or get_current_context(silent=True)
    while ctx is not None and ctx.parent is not None:
        ctx = ctx.parent  # the group's context holds it
    count = int(ctx.meta.get(_VERBOSE_KEY, 0)) if ctx is not None else 0
    if count:
        return count
    try:
        return max(int(os.environ.get(VERBOSE_ENV, "0") or 0), 0)
    except ValueError:
        return 0


def _report(failure: Failure, exc: BaseException, as_json: bool, debug: bool) -> None:
    if debug:
        shown = exc.cause if isinstance(exc, CommandError) and exc.cause is not None else exc
        traceback.print_exception(shown, file=sys.stderr)
    if as_json:
        typer.echo(json.dumps(failure.to_json()))
    else:
        typer.secho(f"error: {failure.message}", err=True, fg=typer.colors.RED)


class TowerflowGroup(TyperGroup):
    """The ``towerflow`` group: runs a command and turns its failure into one reported
    error and exit code (``describe``). ``--debug`` and ``--json`` are spotted on the whole
    command line; ``--debug`` may stand before or after the command name."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        """Note ``--json``; take out every ``--debug`` and ``-v`` / ``-vv`` / ``--verbose``
        (options after ``--`` excepted): they may stand before or after the command name."""
        end = args.index("--") if "--" in args else len(args)
        head, tail = args[:end], args[end:]
        ctx.meta[_JSON_KEY] = "--json" in head
        if "--debug" in head:
            ctx.meta[_DEBUG_KEY] = True
            head = [a for a in head if a != "--debug"]
        ctx.meta[_VERBOSE_KEY] = sum(_VERBOSE_FLAGS.get(a, 0) for a in head)
        head = [a for a in head if a not in _VERBOSE_FLAGS]
        return super().parse_args(ctx, [*head, *tail])

    def invoke(self, ctx: Context) -> Any:
        """Run the command; report any failure but an exit or Ctrl-C, then exit with its code."""
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            # typer.Exit is not a click Exit in this typer version: a command's own exit
            # code (e.g. `verify` on damage) must pass through untouched.
            raise
        except UsageError as e:
            if not ctx.meta.get(_JSON_KEY):
                raise  # click prints the usage with the error (exit 2)
            _report(describe(e), e, True, debug_requested(ctx))
            raise typer.Exit(int(ExitCode.USAGE)) from None
        except Exception as e:
            failure = describe(e)
            _report(failure, e, bool(ctx.meta.get(_JSON_KEY)), debug_requested(ctx))
            raise typer.Exit(int(failure.code)) from None
