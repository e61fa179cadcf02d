"""Tracking steps of the nightly flow (``tracking.backend: mlflow``; ``core.tracking``).

- ``track-run`` (after post-report): the published version as one MLflow run named after
  the flow run, and a ``nightly-tracking`` artifact saying where it went. The flow calls
  it through ``track_published``, which limits it to ``runtime.timeouts.track_run``.
- ``track_failures``: around the run, so that one which published nothing is tracked too
  (status FAILED, with the reason).

Neither lets tracking fail the nightly. By the time track-run starts, the version is
published and serving, and the tracking store gets a copy of what the version itself
keeps (metrics.json, training.json, plots): failing the flow would report a healthy
publish as a failure (and invite a rerun that trains again) over a copy that
``core.tracking.track_version`` can send later, idempotently. So an MLflow error or a
timeout leaves the track-run task Failed (red on the run page, with its traceback) and
the flow Completed, with a warning in the flow's log and in the ``nightly-tracking``
artifact. No Prefect retries: MLflow's HTTP client already retries with backoff
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``); retrying that again would only multiply the wait.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run

from core.config import NightlyConfig
from core.progress import StepLogger
from core.tracking import track_failure, track_version

__all__ = ["TRACKING_ARTIFACT", "track_failures", "track_published", "track_run"]

log = logging.getLogger(__name__)

TRACKING_ARTIFACT: Final = "nightly-tracking"


def _logger() -> StepLogger:
    """The flow or task run's logger (shown on its page), else this module's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def _flow_run_tags() -> dict[str, str]:
    """The Prefect flow run an MLflow run came from (empty outside a flow run)."""
    run_id, name = flow_run.get_id(), flow_run.get_name()
    return {
        **({"prefect_flow_run_id": str(run_id)} if run_id else {}),
        **({"prefect_flow_run_name": str(name)} if name else {}),
    }


@task(name="track-run")
def track_run(version_id: str, root: str, config: NightlyConfig) -> str | None:
    """``core.tracking.track_version``: log published ``version_id`` to MLflow, in a run
    named after the flow run; returns the MLflow run id (None with tracking off). Raises
    what MLflow raises: call it through ``track_published``."""
    if config.tracking.backend == "none":
        return None
    tracked = track_version(
        root,
        version_id,
        config.tracking,
        run_name=flow_run.get_name() or version_id,
        tags=_flow_run_tags(),
        logger=get_run_logger(),
    )
    where = f"[{tracked.run_id}]({tracked.url})" if tracked.url else f"`{tracked.run_id}`"
    create_markdown_artifact(
        key=TRACKING_ARTIFACT,
        markdown=(
            f"Version `{version_id}` is MLflow run {where} in experiment "
            f"`{config.tracking.experiment}` at `{tracked.tracking_uri}`"
            + (" (tracked before: nothing logged again)" if tracked.existed else "")
            + ".\n"
        ),
        description=f"Experiment tracking of version {version_id}",
    )
    return tracked.run_id


def track_published(version_id: str, root: str, config: NightlyConfig) -> str | None:
    """Run track-run limited to ``config.runtime.timeouts.track_run`` seconds; returns
    the MLflow run id, or None when tracking is off or failed. Never raises for a
    tracking failure (see the module docstring): it is logged as a warning and posted
    as the ``nightly-tracking`` artifact."""
    if config.tracking.backend == "none":
        return None  # no task run: nothing to show
    seconds = config.runtime.timeouts.track_run
    bounded = track_run.with_options(timeout_seconds=seconds)
    state = bounded(version_id, root, config, return_state=True)
    if state.is_completed():
        run_id: str | None = state.result()
        return run_id
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException):
        reason = f"{type(error).__name__}: {error}"
        if isinstance(error, TimeoutError):
            reason += f" (the limit is runtime.timeouts.track_run, {seconds:g} s)"
    else:
        reason = state.message or "track-run failed"
    _logger().warning(
        "version %s is published but NOT tracked in MLflow (%s); send it later with "
        "core.tracking.track_version",
        version_id,
        reason,
    )
    try:
        create_markdown_artifact(
            key=TRACKING_ARTIFACT,
            markdown=(
                f"**Not tracked** in MLflow: {reason}\n\nVersion `{version_id}` is published "
                "all the same. Send it later with `core.tracking.track_version(root, "
                f"{version_id!r}, config.tracking)`.\n"
            ),
            description=f"Experiment tracking of version {version_id}: failed",
        )
    except Exception:  # the warning above already says it; the run must not fail here
        log.warning("could not post the %s artifact", TRACKING_ARTIFACT, exc_info=True)
    return None


@contextmanager
def track_failures(config: NightlyConfig) -> Iterator[None]:
    """Around a nightly run: if it raises and tracking is on, log an MLflow run with
    status FAILED and the reason, then re-raise. An error of MLflow's is only logged
    here: the run's own error is the one to report."""
    try:
        yield
    except Exception as e:
        if config.tracking.backend == "mlflow":
            try:
                name = flow_run.get_name() or "nightly"
                track_failure(config, e, run_name=name, tags=_flow_run_tags(), logger=_logger())
            except Exception:
                _logger().warning("could not track the failed run in MLflow", exc_info=True)
        raise
