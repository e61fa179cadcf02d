"""The nightly's tasks with their time limits from configuration (``TaskTimeouts``).

Prefect fixes ``timeout_seconds`` when a task is declared, so each run takes copies made
with ``Task.with_options``. Prefect's own timeout error says only "Scope timed out after N
second(s)"; each call here turns it into ``core.lifecycle.StepTimeoutError``, which names
the step and the setting to raise. The flow calls ``steps.train_model(...)`` as it would
call the task itself.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import Task, get_run_logger
from prefect.exceptions import MissingContextError
from prefect.task_engine import TaskRunTimeoutError

from core.config import TaskTimeouts
from core.evaluation import EvalReport
from core.items import RecordSummary
from core.items_stream import EventOutcome
from core.lifecycle import StepTimeoutError
from core.memory import RssSampler
from core.refs import IndexSummary, SnapshotRef, StageRef
from core.training import TrainSummary
from tasks.data import prepare_data
from tasks.embed import embed_catalogue
from tasks.evaluate import evaluate_model, quality_gate
from tasks.index import build_item_index
from tasks.items import (
    announce_batch_rejections,
    announce_rejections,
    compact_chain,
    merge_catalogue,
    post_batch_report,
    post_items_report,
    publish_catalogue,
    record_events,
    record_items,
    request_compaction,
)
from tasks.precheck import check_config
from tasks.publish import begin_version, publish_version
from tasks.report import post_report, stage_report
from tasks.train import train_model

__all__ = ["ItemsSteps", "NightlySteps", "items_steps", "limited", "nightly_steps"]

R = TypeVar("R")

log = logging.getLogger(__name__)


def limited(task: Task[..., R], timeouts: TaskTimeouts, setting: str) -> Callable[..., R]:
    """``task`` limited to ``getattr(timeouts, setting)`` seconds (when called from the
    main thread); past it the call raises ``StepTimeoutError`` naming the task and the
    setting."""
    seconds = float(getattr(timeouts, setting))
    bounded = task.with_options(timeout_seconds=seconds)

    @functools.wraps(task.fn)
    def call(*args: Any, **kwargs: Any) -> R:
        # Outside the main thread (the items consumer's runs) Prefect cannot interrupt a
        # step (no signals there); it would only warn, every call, and raise once the
        # step has finished anyway. The step runs without a limit there.
        run = bounded if threading.current_thread() is threading.main_thread() else task
        rss = RssSampler()
        try:
            with rss:
                return run(*args, **kwargs)
        except TaskRunTimeoutError as e:
            raise StepTimeoutError(task.name, seconds, setting) from e
        finally:
            _log_peak(task.name, rss)

    return call


def _log_peak(name: str, rss: RssSampler) -> None:
    """The step's peak resident set, on the run's log (the flow's process: a step's shards
    on Dask workers are measured by their own processes)."""
    if rss.peak_mib is None or rss.start_mib is None:
        return
    try:
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
    except MissingContextError:
        logger = log
    logger.info(
        "%s: peak RSS %.0f MiB in this process (%.0f MiB when it started)",
        name,
        rss.peak_mib,
        rss.start_mib,
    )


@dataclass(frozen=True)
class NightlySteps:
    """The nightly's tasks, each limited in time (parameters as the tasks')."""

    check_config: Callable[..., None]
    prepare_data: Callable[..., SnapshotRef]
    begin_version: Callable[..., StageRef]
    train_model: Callable[..., TrainSummary]
    embed_catalogue: Callable[..., int]
    evaluate_model: Callable[..., EvalReport]
    quality_gate: Callable[..., None]
    merge_catalogue: Callable[..., int]
    build_item_index: Callable[..., IndexSummary]
    stage_report: Callable[..., list[str]]
    publish_version: Callable[..., str]
    post_report: Callable[..., str]


def nightly_steps(timeouts: TaskTimeouts) -> NightlySteps:
    """The nightly's tasks limited to ``timeouts`` (seconds, by task name)."""
    t = timeouts
    return NightlySteps(
        check_config=limited(check_config, t, "check_config"),
        prepare_data=limited(prepare_data, t, "prepare_data"),
        begin_version=limited(begin_version, t, "begin_version"),
        train_model=limited(train_model, t, "train_model"),
        embed_catalogue=limited(embed_catalogue, t, "embed_items"),
        evaluate_model=limited(evaluate_model, t, "evaluate"),
        quality_gate=limited(quality_gate, t, "quality_gate"),
        merge_catalogue=limited(merge_catalogue, t, "merge_catalogue"),
        build_item_index=limited(build_item_index, t, "build_index"),
        stage_report=limited(stage_report, t, "stage_report"),
        publish_version=limited(publish_version, t, "publish_version"),
        post_report=limited(post_report, t, "post_report"),
    )


@dataclass(frozen=True)
class ItemsSteps:
    """The new-items flow's tasks, each limited in time (parameters as the tasks')."""

    record_items: Callable[..., RecordSummary]
    announce_rejections: Callable[..., bool]
    publish_catalogue: Callable[..., str]
    post_items_report: Callable[..., str]
    request_compaction: Callable[..., bool]
    compact_chain: Callable[..., Any]
    # The same steps for a batch of streamed events (flows.new_items.new_items_batch).
    record_events: Callable[..., tuple[list[EventOutcome], list[RecordSummary]]]
    announce_batch_rejections: Callable[..., int]
    post_batch_report: Callable[..., str]


def items_steps(timeouts: TaskTimeouts) -> ItemsSteps:
    """The new-items flow's tasks limited to ``timeouts`` (seconds, by task name)."""
    t = timeouts
    return ItemsSteps(
        record_items=limited(record_items, t, "record_items"),
        announce_rejections=limited(announce_rejections, t, "announce_rejections"),
        publish_catalogue=limited(publish_catalogue, t, "publish_catalogue"),
        post_items_report=limited(post_items_report, t, "report_items"),
        request_compaction=limited(request_compaction, t, "request_compaction"),
        compact_chain=limited(compact_chain, t, "compact_chain"),
        record_events=limited(record_events, t, "record_items"),
        announce_batch_rejections=limited(announce_batch_rejections, t, "announce_rejections"),
        post_batch_report=limited(post_batch_report, t, "report_items"),
    )
