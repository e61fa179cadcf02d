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
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from storage import Layout, VersionFiles, VersionStore, atomic_write_bytes, write_json
from storage.manifest import utc_now_iso
from tasks.evaluate import EvalReport
from core.plots import history_plot, loss_plot, recall_curve_plot
from core.refs import SnapshotRef, StageRef
from core.report_data import (
    HISTORY_LIMIT,
    ReportInputs,
    history_entry,
    load_version_report,
    parent_history,
    report_sections,
)
from core.report_render import data_uri, to_html, to_markdown
from tasks.retry import IO_RETRY
from tasks.train import TrainSummary

__all__ = [
    "REPORT_ARTIFACT",
    "metrics_rows",
    "post_report",
    "render_plots",
    "report_failures",
    "stage_report",
    "write_html_report",
]

log = logging.getLogger(__name__)

REPORT_ARTIFACT = "nightly-report"


def metrics_rows(report: EvalReport) -> list[dict[str, object]]:
    """One row per ranker with every metric, rounded for display."""
    return [
        {"ranker": name, **{k: round(v, 4) for k, v in metrics.items()}}
        for name, metrics in report.rankers.items()
    ]


def _data(snapshot: SnapshotRef) -> dict[str, object]:
    return {
        "snapshot_id": snapshot.snapshot_id,
        "n_users": snapshot.n_users,
        "n_items": snapshot.n_items,
        "n_interactions": snapshot.n_interactions,
    }


def render_plots(
    train: TrainSummary | None,
    report: EvalReport | None,
    history: list[dict[str, object]],
    validation_metric: str = "validation",
) -> dict[str, bytes]:
    """The report's PNG plots by version file name; a plot without data is left out."""
    plots: dict[str, bytes] = {}
    if train is not None and train.epoch_loss:
        plots[VersionFiles.PLOT_LOSS] = loss_plot(
            train.epoch_loss, train.epoch_validation, validation_metric, train.best_epoch
        )
    if report is not None and report.recall_curve:
        plots[VersionFiles.PLOT_RECALL_AT_K] = recall_curve_plot(report.recall_curve)
    if report is not None and history:
        plots[VersionFiles.PLOT_HISTORY] = history_plot(history, report.gate_metric)
    return plots


@task(name="stage-report", **IO_RETRY)
def stage_report(
    stage: StageRef,
    snapshot: SnapshotRef,
    train: TrainSummary,
    report: EvalReport,
    validation_metric: str = "validation",
) -> list[str]:
    """Stage metrics_history.json (the parent's history + this version, newest last) and
    the plots; returns the staged file names."""
    store = VersionStore(Layout(Path(stage.root)))
    staging = store.staging_path(stage.version_id)
    history = parent_history(store, stage.parent)
    history.append(history_entry(stage.version_id, _data(snapshot), report, utc_now_iso()))
    history = history[-HISTORY_LIMIT:]
    write_json(staging / VersionFiles.METRICS_HISTORY, history)
    plots = render_plots(train, report, history, validation_metric)
    for name, png in plots.items():
        atomic_write_bytes(staging / name, png)
    get_run_logger().info("staged report files: %s", ", ".join(sorted(plots)))
    return [VersionFiles.METRICS_HISTORY, *sorted(plots)]


def write_html_report(layout: Layout, inputs: ReportInputs) -> Path:
    """Write the standalone HTML report to ``<root>/reports/<version>.html``; returns it."""
    html = to_html(report_sections(inputs), inputs.plots, utc_now_iso())
    path = layout.reports_dir / f"{inputs.version_id or 'not-published'}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, html.encode("utf-8"))
    return path


@task(name="post-report", **IO_RETRY)
def post_report(version_id: str, root: str) -> str:
    """Post the published version's report artifacts; returns the markdown."""
    layout = Layout(Path(root))
    inputs = load_version_report(VersionStore(layout), version_id, verify=False)
    # Plots travel inside the artifact (data URIs): the UI shows them with no file access.
    markdown = to_markdown(
        report_sections(inputs), lambda p: data_uri(inputs.plots[p]) if p in inputs.plots else None
    )
    html_path = write_html_report(layout, inputs)
    markdown += (
        f"\nThe same report as one HTML file: `{html_path}` (or `towerflow report {version_id}`).\n"
    )
    create_markdown_artifact(
        key=REPORT_ARTIFACT, markdown=markdown, description=f"Nightly run, version {version_id}"
    )
    if inputs.evaluation is not None:
        create_table_artifact(
            key="nightly-metrics",
            table=metrics_rows(inputs.evaluation),
            description=f"Test metrics of version {version_id}",
        )
    create_link_artifact(
        key="nightly-report-file",
        link=html_path.as_uri(),
        link_text=f"report of {version_id} (HTML)",
        description="Standalone HTML report with plots (open on the machine that ran it)",
    )
    return markdown


@contextmanager
def report_failures(root: str) -> Iterator[None]:
    """Around a nightly run: if it raises, post ``nightly-report`` saying why nothing was
    published and which version keeps serving, then re-raise."""
    try:
        yield
    except Exception as e:
        try:
            store = VersionStore(Layout(Path(root)))
            inputs = ReportInputs(
                version_id=None,
                published=False,
                failure=f"{type(e).__name__}: {e}",
                current=store.current(),
            )
            create_markdown_artifact(
                key=REPORT_ARTIFACT,
                markdown=to_markdown(report_sections(inputs), lambda _p: None),
                description="Nightly run: not published",
            )
        except Exception:
            log.warning("could not post the failure report", exc_info=True)
        raise
