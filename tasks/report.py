"""Report steps of the nightly flow.

- ``stage-report`` (before publish): the metric history and the plots go into the staged
  version, so they are checksummed and published with it (and carried into the versions
  the new-items flow derives from it).
- ``post-report`` (after publish): the run's artifacts with stable keys, so the Prefect UI
  shows their history: ``nightly-report`` (markdown with the plots), ``nightly-metrics``
  (table), ``nightly-report-file`` (link to the same report as a standalone HTML file).
- ``report_failures``: a run that stops early still posts ``nightly-report``, saying why
  nothing was published and what keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from core.evaluation import EvalReport
from core.refs import SnapshotRef, StageRef
from core.reports import failure_markdown, published_report, stage_report_files
from core.training import TrainSummary
from tasks.retry import IO_RETRY

__all__ = ["REPORT_ARTIFACT", "post_report", "report_failures", "stage_report"]

log = logging.getLogger(__name__)

REPORT_ARTIFACT: Final = "nightly-report"


@task(name="stage-report", **IO_RETRY)
def stage_report(
    stage: StageRef,
    snapshot: SnapshotRef,
    train: TrainSummary,
    report: EvalReport,
    validation_metric: str = "validation",
) -> list[str]:
    """Stage metrics_history.json and the plots; returns the staged file names."""
    return stage_report_files(
        stage, snapshot, train, report, validation_metric, logger=get_run_logger()
    )


@task(name="post-report", **IO_RETRY)
def post_report(version_id: str, root: str) -> str:
    """Post the published version's report artifacts; returns the markdown."""
    report = published_report(root, version_id)
    create_markdown_artifact(
        key=REPORT_ARTIFACT,
        markdown=report.markdown,
        description=f"Nightly run, version {version_id}",
    )
    if report.metrics is not None:
        create_table_artifact(
            key="nightly-metrics",
            table=report.metrics,
            description=f"Test metrics of version {version_id}",
        )
    create_link_artifact(
        key="nightly-report-file",
        link=report.html_path.as_uri(),
        link_text=f"report of {version_id} (HTML)",
        description="Standalone HTML report with plots (open on the machine that ran it)",
    )
    return report.markdown


@contextmanager
def report_failures(root: str) -> Iterator[None]:
    """Around a nightly run: if it raises, post ``nightly-report`` saying why nothing was
    published and which version keeps serving, then re-raise."""
    try:
        yield
    except Exception as e:
        try:
            create_markdown_artifact(
                key=REPORT_ARTIFACT,
                markdown=failure_markdown(root, e),
                description="Nightly run: not published",
            )
        except Exception:
            log.warning("could not post the failure report", exc_info=True)
        raise
