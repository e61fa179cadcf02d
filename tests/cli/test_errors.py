"""Every command fails with one `error:` line and an exit code per kind of failure
(`cli.errors`), never a traceback unless asked (`--debug`, TOWERFLOW_DEBUG=1); with `--json`
the error is one JSON object on stdout. Commands here need no Prefect server; failures
inside flows are in test_flow_errors.py."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from cli.app import app
from cli.errors import CommandError, ExitCode, PrefectServerUnavailable, classify, describe
from core.evaluation import QualityGateError
from core.indexing import IndexRecallError
from core.lifecycle import OverlappingRunError, StepTimeoutError
from core.precheck import ConfigCheckError, InputFileMissingError
from core.recall_types import UnknownUserError
from storage import (
    CorruptVersionError,
    NoCurrentVersionError,
    PublishConflictError,
    StoreReadOnlyError,
    VersionFiles,
    VersionNotFoundError,
    VersionStore,
)
from storage.database import DatabaseError, DatabaseUnavailableError
from tests.core.items.conftest import MakeStore

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

FAISS_DISK_FULL = (
    "Error in void faiss::write_index(const faiss::Index*, faiss::IOWriter*) at "
    "/project/faiss/impl/index_write.cpp:567: write error in /s/index.faiss: 0 != 4096 "
    "(No space left on device)"
)


def one_error(result: Result, code: int) -> str:
    """The single `error:` line of a failed command, after checking its exit code and that
    no traceback was printed."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def json_error(result: Result, code: int) -> dict[str, Any]:
    """The `{"error": ...}` object a failed `--json` command printed on stdout."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "error:" not in result.stderr
    error: dict[str, Any] = json.loads(result.stdout)["error"]
    assert error["exit_code"] == code and error["kind"] == ExitCode(code).kind
    return error


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (CorruptVersionError("v1", "index.faiss", "checksum mismatch"), ExitCode.CORRUPT),
        (StoreReadOnlyError("/s"), ExitCode.PERMISSION),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), ExitCode.PERMISSION),
        (OSError(errno.EROFS, "Read-only file system", "/x"), ExitCode.PERMISSION),
        (sqlite3.OperationalError("attempt to write a readonly database"), ExitCode.PERMISSION),
        (OSError(errno.ENOSPC, "No space left on device", "/x"), ExitCode.DISK_FULL),
        (sqlite3.OperationalError("database or disk is full"), ExitCode.DISK_FULL),
        (RuntimeError(FAISS_DISK_FULL), ExitCode.DISK_FULL),
        (PublishConflictError("v1", "v2", "v3"), ExitCode.CONFLICT),
        (OverlappingRunError("another nightly run"), ExitCode.CONFLICT),
        (StepTimeoutError("train-model", 60, "train_model"), ExitCode.TIMEOUT),
        # A ConnectionError too, but the database's, not Prefect's.
        (DatabaseUnavailableError("cannot connect to the store's database"), ExitCode.DATABASE),
        (DatabaseError("invalid database binding"), ExitCode.DATABASE),
        (QualityGateError("quality gate failed"), ExitCode.QUALITY_GATE),
        (IndexRecallError("below the target"), ExitCode.QUALITY_GATE),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), ExitCode.SERVER),
        (httpx.ConnectError("refused"), ExitCode.SERVER),
        (PrefectServerUnavailable("PREFECT_API_URL is not set"), ExitCode.SERVER),
        (RuntimeError("Failed to reach API at http://127.0.0.1:9/api/"), ExitCode.SERVER),
        (NoCurrentVersionError("nothing published"), ExitCode.NOT_FOUND),
        (VersionNotFoundError("v-x"), ExitCode.NOT_FOUND),
        (UnknownUserError("user 5 is not in version v1"), ExitCode.NOT_FOUND),
        (FileNotFoundError(errno.ENOENT, "No such file", "/x"), ExitCode.NOT_FOUND),
        (InputFileMissingError("data.importing.interactions.path"), ExitCode.NOT_FOUND),
        (ConfigCheckError("index.factory 'IVF8,Flot'"), ExitCode.USAGE),
        (ValueError("bad"), ExitCode.USAGE),
    ],
)
def test_each_known_failure_has_its_exit_code(exc: BaseException, code: ExitCode) -> None:
    assert classify(exc) is code
    assert describe(exc).code is code and describe(exc).type == type(exc).__name__


def test_disk_full_anywhere_in_the_chain_wins_and_unknown_errors_name_their_type() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise ValueError("cannot write config") from e
    except ValueError as wrapped:
        assert classify(wrapped) is ExitCode.DISK_FULL
        assert describe(wrapped).message.startswith("disk full: cannot write config")
    assert classify(RuntimeError("boom")) is None
    other = describe(RuntimeError("boom"))
    assert other.code is ExitCode.ERROR and other.message.startswith("RuntimeError: boom")
    assert "--debug" in other.message
    assert describe(UnknownUserError("user 5 is not in version v1")).message == (
        "user 5 is not in version v1"  # not KeyError's quoted repr
    )


def test_fail_takes_the_code_of_the_exception_being_handled() -> None:
    try:
        raise CorruptVersionError("v1", None, "bad")
    except CorruptVersionError:
        from cli.options import fail

        derived, explicit = fail("damaged"), fail("damaged", 2)
    assert (derived.exit_code, explicit.exit_code) == (4, 2)
    assert describe(derived).type == "CorruptVersionError"
    assert CommandError("plain").exit_code == 1


# -- usage / config (2), found before anything runs -------------------------------------


def test_a_bad_index_factory_fails_in_seconds_before_training(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text('index: {factory: "IVF8,Flot"}\n')
    root = tmp_path / "store"
    start = time.perf_counter()
    result = runner.invoke(
        app, ["run", "--scale", "tiny", "--config", str(config), "--root", str(root)]
    )
    assert time.perf_counter() - start < 10
    line = one_error(result, 2)
    assert "index.factory 'IVF8,Flot'" in line and "could not parse" in line
    assert not root.exists()  # no data, no staging: nothing ran
    error = json_error(
        runner.invoke(app, ["run", "--config", str(config), "--root", str(root), "--json"]), 2
    )
    assert error["type"] == "ConfigCheckError"


def test_cuda_on_a_machine_without_it_is_a_config_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = tmp_path / "cuda.yaml"
    config.write_text("train: {device: cuda}\n")
    for command in ("run", "evaluate"):
        result = runner.invoke(
            app, [command, "--config", str(config), "--root", str(tmp_path / "s")]
        )
        assert "torch.cuda.is_available() is False" in one_error(result, 2)


def test_invalid_values_and_usage_errors(tmp_path: Path) -> None:
    line = one_error(runner.invoke(app, ["run", "--epochs", "0", "--root", str(tmp_path)]), 2)
    assert "train.epochs: Input should be greater than or equal to 1 (got 0)" in line
    line = one_error(runner.invoke(app, ["run", "--world-size", "0", "--root", str(tmp_path)]), 2)
    assert "train.world_size: Input should be greater than or equal to 1 (got 0)" in line
    # A usage error click finds itself: its usage text normally, JSON with --json.
    assert runner.invoke(app, ["recommend"]).exit_code == 2
    assert "user-id" in json_error(runner.invoke(app, ["recommend", "--json"]), 2)["message"]


# -- not found (3) ------------------------------------------------------------------------


def test_missing_things_exit_3(tmp_path: Path) -> None:
    line = one_error(
        runner.invoke(app, ["recommend", "--user-id", "1", "--root", str(tmp_path)]), 3
    )
    assert "nothing published yet" in line
    config = tmp_path / "import.yaml"
    config.write_text(
        "data:\n  source: import\n  importing:\n    interactions: {path: /nope/log.csv}\n"
    )
    line = one_error(
        runner.invoke(app, ["run", "--config", str(config), "--root", str(tmp_path)]), 3
    )
    assert "data.importing.interactions.path '/nope/log.csv' does not exist" in line


# -- corrupt (4), and what --debug and --json show --------------------------------------


def _corrupt_current(store: VersionStore) -> str:
    current = store.current()
    assert current
    path = store.layout.root / "versions" / current / VersionFiles.INDEX
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    return current


def test_a_corrupt_version_is_one_line_a_traceback_only_when_asked(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store("Flat")
    root, current = str(store.layout.root), _corrupt_current(store)
    args = ["recommend", "--user-id", "1", "--root", root]
    line = one_error(runner.invoke(app, args), 4)
    assert current in line and "index.faiss" in line and "towerflow rollback" in line

    error = json_error(runner.invoke(app, [*args, "--json"]), 4)
    assert error["type"] == "CorruptVersionError" and current in error["message"]

    for argv in (["--debug", *args], [*args, "--debug"]):
        shown = runner.invoke(app, argv)
        assert shown.exit_code == 4
        assert "Traceback (most recent call last)" in shown.stderr
        assert "storage.errors.CorruptVersionError" in shown.stderr
        assert [x for x in shown.stderr.splitlines() if x.startswith("error:")] == [line]
    monkeypatch.setenv("TOWERFLOW_DEBUG", "1")
    assert "Traceback" in runner.invoke(app, args).stderr


# -- permission (6), disk full (7), conflict (9), anything else (1) ----------------------


def _raise(exc: BaseException) -> Any:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raiser


@pytest.mark.parametrize(
    ("exc", "code", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/o/r.html"), 6, "Permission denied"),
        (OSError(errno.EROFS, "Read-only file system", "/o"), 6, "Read-only file system"),
        (OSError(errno.ENOSPC, "No space left on device", "/o/r.html"), 7, "No space left"),
    ],
)
def test_report_that_cannot_be_written(
    make_store: MakeStore,
    monkeypatch: pytest.MonkeyPatch,
    exc: OSError,
    code: int,
    expected: str,
) -> None:
    import core.reports

    root = str(make_store("Flat").layout.root)
    monkeypatch.setattr(core.reports, "write_version_report", _raise(exc))
    result = runner.invoke(app, ["report", "--root", root, "--out", "/o/r.html"])
    line = one_error(result, code)
    assert line.startswith("error: cannot write the report of CURRENT") and expected in line


@pytest.mark.parametrize(
    ("exc", "code", "expected"),
    [
        (sqlite3.OperationalError("database or disk is full"), 7, "disk full"),
        (PublishConflictError("v1", "v2", "v3"), 9, "won the race"),
        (StoreReadOnlyError("/s", "EROFS"), 6, "the store is read-only"),
    ],
)
def test_rollback_failures(
    make_store: MakeStore,
    monkeypatch: pytest.MonkeyPatch,
    exc: Exception,
    code: int,
    expected: str,
) -> None:
    store = make_store("Flat")
    current = store.current()
    monkeypatch.setattr(VersionStore, "rollback", _raise(exc))
    args = ["rollback", str(current), "--root", str(store.layout.root)]
    assert expected in one_error(runner.invoke(app, args), code)
    assert expected in json_error(runner.invoke(app, [*args, "--json"]), code)["message"]


def test_an_unexpected_error_exits_1_naming_its_type(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.recall

    root = str(make_store("Flat").layout.root)
    monkeypatch.setattr(core.recall.Recaller, "load", _raise(RuntimeError("boom")))
    line = one_error(runner.invoke(app, ["recommend", "--user-id", "1", "--root", root]), 1)
    assert line == "error: RuntimeError: boom (run with --debug for the traceback)"


# -- in a child process: a read-only store (6), no Prefect server (8) --------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _only_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    return line


def test_run_on_a_read_only_store_fails_before_starting(tmp_path: Path) -> None:
    from tests.storage.readonly import read_only

    root = tmp_path / "store"
    root.mkdir()
    argv = [sys.executable, "-m", "cli", "run", "--scale", "tiny", "--root", str(root)]
    with read_only(root) as run:
        proc = run(argv)
    line = _only_error_line(proc, 6)
    assert f"cannot write {root}: the store is read-only" in line
    assert "Starting temporary server" not in proc.stderr  # refused before Prefect starts


def test_run_without_a_reachable_prefect_server_exits_8(tmp_path: Path) -> None:
    dead = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing listens on port 9
    args = ["run", "--scale", "tiny", "--epochs", "1", "--root", str(tmp_path)]
    line = _only_error_line(_cli(*args, env=dead), 8)
    assert "no Prefect server: Failed to reach API at http://127.0.0.1:9/api" in line
