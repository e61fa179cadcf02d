"""Synthetic data generation, item embedding, evaluation and the index build split over a
Dask cluster (``runtime.task_runner: dask``).

Subflows, because Prefect fixes a flow's task runner when the flow starts and the nightly
must stay on its default runner for everything else: these run on Prefect's
``DaskTaskRunner`` (prefect-dask), on a local cluster started for the run or on an
existing scheduler. Three of them, because training comes between generation and
embedding, and the quality gate and the catalogue merge between evaluation and the index
build; generation's plan runs first in the nightly, so a stored snapshot starts no
cluster. Each step is plan -> shards mapped over the
workers -> merge; plans and merges run in the flow's process, and shards pass part
references (``storage.shards``), never data, through the scheduler.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar, cast

import dask
from prefect import flow, unmapped
from prefect.client.orchestration import get_client
from prefect.futures import PrefectFutureList, wait
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.settings.legacy import Setting
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from core.config import (
    DaskConfig,
    DataConfig,
    EvalConfig,
    IndexConfig,
    RuntimeConfig,
    TaskTimeouts,
)
from core.cpus import thread_budget
from core.evaluation import EvalReport
from core.lifecycle import StepTimeoutError
from core.refs import IndexSummary, SnapshotRef, StageRef
from core.sharded_data import DataPlan
from tasks.sharded import (
    embed_items_shard,
    evaluate_users_shard,
    generate_events_shard,
    index_items_shard,
    merge_embedded_items,
    merge_evaluated_users,
    merge_generated_events,
    merge_index_parts,
    plan_data,
    plan_index_build,
    plan_item_embedding,
    plan_user_evaluation,
    tuning_truth_shard,
)
from tasks.steps import limited

__all__ = [
    "WORKER_CONFIG",
    "build_index",
    "build_index_on_dask",
    "dask_task_runner",
    "embed_and_evaluate",
    "embed_and_evaluate_on_dask",
    "gather_shards",
    "generate_data",
    "prepare_data_on_dask",
]

R = TypeVar("R")

# Dask settings of the workers a local cluster starts (the nanny hands them its config).
# No spilling to disk: shards return part references, not data, so there is nothing worth
# spilling, and a spilling worker creates a `storage/` folder in its scratch directory,
# which Dask puts on sys.path, where it would shadow towerflow's `storage` package (an
# editable install is found after sys.path). Workers of an existing cluster need the same
# settings: DASK_DISTRIBUTED__WORKER__MEMORY__TARGET=False and ..._SPILL=False (README).
WORKER_CONFIG: dict[str, object] = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
}


def dask_task_runner(cfg: DaskConfig) -> DaskTaskRunner:
    """Prefect's Dask runner for ``cfg``: the scheduler at ``cfg.address``, else a local
    cluster of ``cfg.n_workers`` single-threaded worker processes on loopback (a shard is
    numeric work that sizes its own torch threads; more Dask threads per worker would
    oversubscribe the cores) with no dashboard."""
    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": cfg.n_workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
            # No dashboard; the scheduler's small HTTP server (health, metrics) on a free
            # port, not 8787, which another cluster on the machine may hold.
            "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            # Workers print to this terminal: at the level this process's terminal shows
            # (the CLI's quiet default, -v, -vv), as a run on the local runner would.
            "env": {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": _terminal_level()},
        }
    )


def _terminal_level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())


@flow(name="prepare-data-sharded", log_prints=False)
def generate_data(data_cfg: DataConfig, plan: DataPlan, runtime: RuntimeConfig) -> SnapshotRef:
    """Draw the planned snapshot's events by user blocks mapped over the task runner's
    workers, then join them and commit the snapshot."""
    timeouts = runtime.timeouts
    parts = generate_events_shard.map(unmapped(data_cfg), unmapped(plan), plan.spans)
    return limited(merge_generated_events, timeouts, "prepare_data")(
        data_cfg, plan, gather_shards(parts, generate_events_shard.name, timeouts, "prepare_data")
    )


@flow(name="embed-evaluate-sharded", log_prints=False)
def embed_and_evaluate(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    runtime: RuntimeConfig,
    threads: int | None = None,
) -> EvalReport:
    """Embed every staged item and evaluate the staged model, each in shards mapped over
    the task runner's workers; returns the evaluation report (metrics.json staged)."""
    dask, timeouts, resume = runtime.dask, runtime.timeouts, runtime.resume
    shard_threads = dask.shard_threads(thread_budget(threads).count)

    plan = limited(plan_item_embedding, timeouts, "embed_items")(
        stage, dask.embed_shard_items, runtime.embed_batch_size, dask.n_workers, resume
    )
    parts = embed_items_shard.map(
        unmapped(stage), plan.spans, unmapped(plan.batch_size), unmapped(shard_threads)
    )
    limited(merge_embedded_items, timeouts, "embed_items")(
        stage, plan, gather_shards(parts, embed_items_shard.name, timeouts, "embed_items")
    )

    eplan = limited(plan_user_evaluation, timeouts, "evaluate")(
        snapshot, stage, data_cfg, eval_cfg, dask.eval_shard_users, dask.n_workers, threads, resume
    )
    results = evaluate_users_shard.map(
        unmapped(snapshot),
        unmapped(stage),
        unmapped(data_cfg),
        unmapped(eval_cfg),
        unmapped(eplan),
        eplan.spans,
        unmapped(shard_threads),
    )
    return limited(merge_evaluated_users, timeouts, "evaluate")(
        snapshot,
        stage,
        data_cfg,
        eval_cfg,
        eplan,
        gather_shards(results, evaluate_users_shard.name, timeouts, "evaluate"),
        threads,
    )


@flow(name="build-index-sharded", log_prints=False)
def build_index(
    stage: StageRef, cfg: IndexConfig, runtime: RuntimeConfig, threads: int | None = None
) -> IndexSummary:
    """Train the empty index, add the item shards and compute the tuning queries' ground
    truth by query shards on the task runner's workers, merge the parts and tune the
    result (``core.sharded_index``); fail below the recall target."""
    dask, timeouts = runtime.dask, runtime.timeouts
    plan = limited(plan_index_build, timeouts, "build_index")(
        stage, cfg, dask.index_shard_items, dask.n_workers, threads
    )
    shard_threads = unmapped(dask.shard_threads(thread_budget(threads).count))
    parts = index_items_shard.map(unmapped(stage), unmapped(plan), plan.spans, shard_threads)
    truth = tuning_truth_shard.map(unmapped(stage), unmapped(cfg), plan.query_spans, shard_threads)
    return limited(merge_index_parts, timeouts, "build_index")(
        stage,
        cfg,
        plan,
        gather_shards(parts, index_items_shard.name, timeouts, "build_index"),
        gather_shards(truth, tuning_truth_shard.name, timeouts, "build_index"),
        threads,
    )


def gather_shards(
    futures: PrefectFutureList[R], name: str, timeouts: TaskTimeouts, setting: str
) -> list[R]:
    """The shards' results in order, once all are done; a failed shard raises its own
    error, and shards still running past the step's time limit raise ``StepTimeoutError``.
    (The limit is kept here, not on the shard tasks: on a Dask worker thread Prefect cannot
    interrupt a task, only notice afterwards.)"""
    seconds = float(getattr(timeouts, setting))
    _, pending = wait(list(futures), timeout=seconds)
    if pending:
        raise StepTimeoutError(name, seconds, setting)
    return [f.result() for f in futures]


def prepare_data_on_dask(root: str, data_cfg: DataConfig, runtime: RuntimeConfig) -> SnapshotRef:
    """The data step with generation split by user blocks: planned in this flow (a stored
    or imported snapshot needs no cluster), drawn as ``generate_data`` on
    ``runtime.dask``'s cluster."""
    dask_cfg = runtime.dask
    plan = limited(plan_data, runtime.timeouts, "prepare_data")(
        root, data_cfg, dask_cfg.generate_shard_users, dask_cfg.n_workers
    )
    if plan.snapshot is not None:
        return plan.snapshot
    runner = cast("TaskRunner[Any]", dask_task_runner(dask_cfg))
    on_dask = generate_data.with_options(task_runner=runner)
    with dask.config.set(WORKER_CONFIG), temporary_settings(_api_for_workers()):
        return on_dask(data_cfg, plan, runtime)


def embed_and_evaluate_on_dask(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    runtime: RuntimeConfig,
    threads: int | None = None,
) -> EvalReport:
    """``embed_and_evaluate`` as a subflow on ``runtime.dask``'s cluster."""
    # DaskTaskRunner is a TaskRunner of Dask futures; with_options is typed for the base.
    runner = cast("TaskRunner[Any]", dask_task_runner(runtime.dask))
    on_dask = embed_and_evaluate.with_options(task_runner=runner)
    # The local cluster starts inside the subflow; the settings its tasks see are those
    # in force here (prefect-dask ships the settings context with each task).
    with dask.config.set(WORKER_CONFIG), temporary_settings(_api_for_workers()):
        return on_dask(snapshot, stage, data_cfg, eval_cfg, runtime, threads)


def build_index_on_dask(
    stage: StageRef, cfg: IndexConfig, runtime: RuntimeConfig, threads: int | None = None
) -> IndexSummary:
    """``build_index`` as a subflow on ``runtime.dask``'s cluster."""
    runner = cast("TaskRunner[Any]", dask_task_runner(runtime.dask))
    on_dask = build_index.with_options(task_runner=runner)
    with dask.config.set(WORKER_CONFIG), temporary_settings(_api_for_workers()):
        return on_dask(stage, cfg, runtime, threads)


def _api_for_workers() -> dict[Setting, str]:
    """PREFECT_API_URL for the workers: the server this run reports to. Without it, a
    run on Prefect's temporary server (``towerflow run``'s default) would have each worker
    process start a temporary server of its own (~15 s each here) and record its shard
    task runs there, out of the run's sight. Empty when the URL is set already."""
    if PREFECT_API_URL.value():
        return {}
    with get_client(sync_client=True) as client:
        return {PREFECT_API_URL: str(client.api_url).rstrip("/")}
