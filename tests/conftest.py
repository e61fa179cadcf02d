"""Test-session settings: Prefect state in a private temp dir, one shared test harness.

Set before any test imports Prefect, so no run ever touches a user's real Prefect state.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="towerflow-test-prefect-")
# Removed when the test process exits (each xdist worker has its own).
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
os.environ.pop("PREFECT_API_URL", None)
# Once a flow has run in a worker, Prefect's API log handler sits on the core loggers
# (PREFECT_LOGGING_EXTRA_LOGGERS): a core warning logged outside any flow (the Python API,
# `towerflow tune`) would then raise Prefect's "no flow run id" UserWarning, an error under
# filterwarnings, depending on which tests ran before in that worker.
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
# OpenMP threads that spin while they wait steal the cores from each other when tests, test
# subprocesses and servers share 2 cores: one logQ test took 31 s spinning and 4 s passive.
# Set before torch or Faiss loads; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# A load-following thread count (model.threadgov) would make a run's floats depend on the
# other tests sharing the cores; tests that exercise it install a governor themselves.
os.environ.setdefault("TOWERFLOW_ADAPTIVE_THREADS", "0")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for the whole session (~8-15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@dataclass(frozen=True)
class Published:
    root: Path
    version_id: str
    output: dict[str, Any]


@pytest.fixture(scope="session")
def published(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """`towerflow run --scale tiny --json` into a fresh root, once per session."""
    root = tmp_path_factory.mktemp("store")
    from typer.testing import CliRunner

    from cli.app import app

    result = CliRunner().invoke(
        app, ["run", "--scale", "tiny", "--epochs", "4", "--root", str(root), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return Published(root=root, version_id=out["version"], output=out)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server on loopback for the session (devtools.pgserver: a cluster
    in a temporary folder, never a system one); yields its URL (with the password).
    Skips where the server binaries are missing, except under CI (.ci/run installs them)."""
    import shutil

    from devtools.pgserver import PgServer, find_bindir

    if find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries are missing (make postgres installs them)")
        pytest.skip("PostgreSQL's server is not installed (make postgres installs it)")
    # Not under pytest's tmp folder: under root the cluster belongs to the postgres user,
    # who cannot enter root's private pytest folders.
    server = PgServer(Path(tempfile.mkdtemp(prefix="towerflow-test-pg-")))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database URL of a schema of its own (an empty registry), with the password, set
    as TOWERFLOW_DATABASE_URL for this test and the processes it starts."""
    import secrets

    url = f"{postgres_server}?schema=t_{secrets.token_hex(6)}"
    monkeypatch.setenv("TOWERFLOW_DATABASE_URL", url)
    return url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A local S3-compatible server (moto in server mode, devtools.s3server) on loopback
    for the session; yields its endpoint."""
    from devtools.s3server import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_root(s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://BUCKET/store`` in a bucket of its own on the session's S3 server, with the
    AWS variables set (test credentials) and this test's cache folder."""
    import secrets

    import pyarrow.fs as pafs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "towerflow-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "towerflow-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("TOWERFLOW_CACHE_DIR", str(tmp_path / "cache"))
    bucket = f"towerflow-{secrets.token_hex(4)}"
    pafs.S3FileSystem(
        endpoint_override=s3_server, allow_bucket_creation=True, region="us-east-1"
    ).create_dir(bucket)
    return f"s3://{bucket}/store"
