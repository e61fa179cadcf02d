"""The tiny nightly on a real Dask cluster (``runtime.task_runner: dask``): a ``dask
scheduler`` and two ``dask worker`` processes started here on loopback. The item and user
shards run on those workers, and the version published is the local runner's: the same
model, item vectors, index and metrics, byte for byte."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from typer.testing import CliRunner

from cli.app import app
from core.config import NightlyConfig, TaskTimeouts
from core.lifecycle import StepTimeoutError, begin_version, discard_version
from core.resume import train_step
from core.snapshots import ensure_snapshot
from flows.nightly import nightly
from flows.sharded import embed_and_evaluate_on_dask, gather_shards
from storage import Layout, VersionStore, read_json, read_table
from tests.conftest import Published
from tests.core.test_sharded_data import SNAPSHOT_TABLES

pytestmark = [pytest.mark.prefect, pytest.mark.e2e]

# What README tells a cluster's workers: no spilling (see flows.sharded.WORKER_CONFIG).
WORKER_ENV = {
    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_workers(logs: list[Path], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all("Registered to:" in p.read_text(errors="replace") for p in logs):
            return
        time.sleep(0.5)
    tails = "\n".join(p.read_text(errors="replace")[-2000:] for p in logs)
    raise AssertionError(f"the Dask workers did not register within {timeout} s:\n{tails}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """(scheduler address, the two workers' log files)."""
    tmp = tmp_path_factory.mktemp("dask")
    dask_cli = str(Path(sys.executable).parent / "dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, **WORKER_ENV}
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp / "scheduler.log", tmp / "worker-0.log", tmp / "worker-1.log"]
    commands = [
        [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]],
        *(
            [dask_cli, "worker", address, "--nthreads", "1", "--nworkers", "1",
             "--name", f"w{i}", "--local-directory", str(tmp / f"w{i}")]
            for i in range(2)
        ),
    ]  # fmt: skip
    try:
        for command, log in zip(commands, logs, strict=True):
            procs.append(
                subprocess.Popen(
                    [*command, "--no-dashboard"],
                    cwd=tmp,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log.open("wb"),
                    stdin=subprocess.DEVNULL,
                )
            )
            if command[1] == "scheduler":
                time.sleep(1.0)
        _wait_for_workers(logs[1:])
        yield address, logs[1:]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _config(root: Path, **runtime: Any) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            # Blocks of 128 users: the tiny world's 400 users draw in 4 blocks.
            "data": {"scale": "tiny", "overrides": {"block_users": 128}},
            "train": {"epochs": 2},
            # Blocks of 64 users and batches of 128 items: the tiny world splits into
            # several shards (377 test users, 600 items).
            "evaluation": {"score_block_users": 64},
            # An IVF index, trained once and filled in item shards on the Dask runner.
            "index": {"factory": "IVF16,PQ8,RFlat", "tune_queries": 200},
            "runtime": {
                "storage_root": str(root),
                "threads": 1,
                "embed_batch_size": 128,
                **runtime,
            },
        }
    )


# Files whose bytes depend only on the data, the model and the code (not on the clock).
_SAME_BYTES = ("model.pt", "item_embeddings.parquet", "index.faiss", "items.parquet")


def test_the_tiny_nightly_on_a_dask_cluster_publishes_what_the_local_runner_does(
    prefect_harness: None, cluster: tuple[str, list[Path]], tmp_path: Path
) -> None:
    address, worker_logs = cluster
    local_id = nightly(_config(tmp_path / "local"))
    dask_id = nightly(
        _config(
            tmp_path / "dask",
            task_runner="dask",
            dask={
                "address": address,
                "generate_shard_users": 128,
                "embed_shard_items": 128,
                "eval_shard_users": 128,
                "index_shard_items": 250,
                "task_threads": 1,
            },
        )
    )
    local = VersionStore(Layout(tmp_path / "local")).open_version(local_id)
    dask = VersionStore(Layout(tmp_path / "dask")).open_version(dask_id)

    # The snapshot drawn by user blocks on the workers is the one drawn in one process.
    snapshot_id = local.manifest.lineage.data_snapshot
    assert snapshot_id is not None and dask.manifest.lineage.data_snapshot == snapshot_id
    for spec in SNAPSHOT_TABLES:
        drawn = [
            read_table(Layout(tmp_path / d).snapshot_dir(snapshot_id) / spec.file_name, spec)
            for d in ("local", "dask")
        ]
        assert drawn[0].num_rows > 0 and drawn[1].equals(drawn[0]), spec.name

    # The published figures: exactly equal, every ranker, cold start and gate included.
    assert read_json(dask.path / "metrics.json") == read_json(local.path / "metrics.json")
    assert dask.manifest.metrics == local.manifest.metrics
    assert sorted(dask.manifest.files) == sorted(local.manifest.files)
    for name in _SAME_BYTES:
        assert dask.manifest.files[name].sha256 == local.manifest.files[name].sha256, name
    assert dask.manifest.item_count == local.manifest.item_count == 600

    # The shards ran on the cluster's workers (4 user-block shards, 5 item shards of 128,
    # 3 user shards of 128, 3 index shards of 250, a tuning query shard per worker), and
    # no part file outlived its merge.
    ran = "".join(p.read_text(errors="replace") for p in worker_logs)
    assert ran.count("Task run 'prepare-data-shard-") >= 4
    assert ran.count("Task run 'embed-items-shard-") >= 5
    assert ran.count("Task run 'evaluate-shard-") >= 3
    assert ran.count("Task run 'build-index-shard-") >= 3
    assert ran.count("Task run 'tune-index-shard-") >= 2
    assert not (tmp_path / "dask" / "staging" / "shards" / dask_id).exists()
    assert not any((tmp_path / "dask" / "staging" / "shards").glob("synthetic-*"))


def test_towerflow_run_on_a_local_dask_cluster(published: Published, tmp_path: Path) -> None:
    """`--task-runner dask` with no address starts a local cluster of worker processes for
    the run. Its shards use one thread each (two workers on this machine's budget), the
    session's local run two, so float sums may differ in the last bit: the model's figures
    agree closely, popularity's (integer counts) exactly."""
    result = CliRunner().invoke(
        app,
        ["run", "--scale", "tiny", "--epochs", "4", "--root", str(tmp_path), "--json",
         "--task-runner", "dask", "--dask-workers", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])["metrics"]
    local = published.output["metrics"]
    assert metrics["n_users"] == local["n_users"] and metrics["gate_passed"]
    assert metrics["rankers"]["popularity"] == local["rankers"]["popularity"]
    for key, value in local["rankers"]["model"].items():
        assert metrics["rankers"]["model"][key] == pytest.approx(value, abs=0.01), key


def test_a_failing_shard_fails_the_step_with_its_own_error(
    prefect_harness: None, cluster: tuple[str, list[Path]], tmp_path: Path
) -> None:
    """A shard that cannot run on its worker (here: the staged weights are gone) fails the
    step with the worker's error, naming the file, instead of merging what the other
    shards wrote; the version's parts go with its staging."""
    address, _ = cluster
    cfg = _config(tmp_path, task_runner="dask", dask={"address": address, "task_threads": 1})
    snapshot = ensure_snapshot(str(tmp_path), cfg.data)
    stage = begin_version(str(tmp_path))
    train_step(snapshot, stage, cfg.data, cfg.tower, cfg.train, cfg.evaluation, resume=False)
    staging = VersionStore(Layout(tmp_path)).staging_path(stage.version_id)
    (staging / "model.pt").unlink()

    with pytest.raises(FileNotFoundError, match=r"model\.pt"):
        embed_and_evaluate_on_dask(snapshot, stage, cfg.data, cfg.evaluation, cfg.runtime, 1)
    assert not (staging / "item_embeddings.parquet").exists()
    discard_version(stage)
    assert not (tmp_path / "staging" / "shards" / stage.version_id).exists()


@task
def _sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flow
def _two_shards(seconds: list[float], limit: float) -> list[float]:
    futures = _sleepy.map(seconds)
    return gather_shards(
        futures, "embed-items-shard", TaskTimeouts(embed_items=limit), "embed_items"
    )


def test_shards_are_gathered_in_order_and_within_the_steps_time_limit(
    prefect_harness: None,
) -> None:
    """The limit of a sharded step holds while its shards run (Prefect cannot interrupt a
    task on a Dask worker thread, so the flow stops waiting instead)."""
    assert _two_shards([0.2, 0.0], 30.0) == [0.2, 0.0]  # the shards' order, not finishing order
    with pytest.raises(StepTimeoutError, match=r"runtime\.timeouts\.embed_items"):
        _two_shards([0.0, 3.0], 0.5)
