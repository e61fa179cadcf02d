"""Run reports of the nightly: what goes into the staged version before publish (metric
history, plots), the report of a published version (markdown for the run page, one
standalone HTML file), and the report of a run that published nothing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from core.evaluation import EvalReport
from core.plots import history_plot, loss_plot, recall_curve_plot
from core.progress import StepLogger
from core.refs import SnapshotRef, StageRef
from core.report_data import (
    HISTORY_LIMIT,
    PLOTS,
    ReportInputs,
    history_entry,
    load_version_report,
    parent_history,
    report_sections,
)
from core.report_render import data_uri, to_html, to_markdown
from core.training import TrainSummary
from storage import Layout, VersionFiles, VersionStore, atomic_write_bytes, write_json
from storage.manifest import utc_now_iso
from storage.remote_binding import read_remote

__all__ = [
    "HtmlReport",
    "PublishedReport",
    "failure_markdown",
    "metrics_rows",
    "published_report",
    "render_plots",
    "stage_report_files",
    "write_html_report",
    "write_version_report",
]

log = logging.getLogger(__name__)


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


def stage_report_files(
    stage: StageRef,
    snapshot: SnapshotRef,
    train: TrainSummary,
    report: EvalReport,
    validation_metric: str = "validation",
    *,
    logger: StepLogger = log,
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
    logger.info("staged report files: %s", ", ".join(sorted(plots)))
    return [VersionFiles.METRICS_HISTORY, *sorted(plots)]


class HtmlReport(NamedTuple):
    """Where an HTML report was written: the local file, and its object-store URL when
    the store's root is one (None for a local store or an explicit ``out``)."""

    path: Path
    shared: str | None


def write_html_report(layout: Layout, inputs: ReportInputs, out: Path | None = None) -> HtmlReport:
    """Write the standalone HTML report to ``out`` (a file, or a folder that gets
    ``<version>.html``; None: ``<root>/reports/<version>.html``, and on an object-store
    root also ``<remote>/reports/<version>.html``, read back before it counts)."""
    name = f"{inputs.version_id or 'not-published'}.html"
    path = layout.reports_dir / name if out is None else out / name if out.is_dir() else out
    html = to_html(report_sections(inputs), inputs.plots, utc_now_iso())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, html.encode("utf-8"))
    remote = read_remote(layout) if out is None else None
    return HtmlReport(path, remote.upload_report(path) if remote is not None else None)


def write_version_report(
    root: str | Path, version_id: str | None = None, out: Path | None = None
) -> tuple[HtmlReport, int]:
    """Write the HTML report of ``version_id`` (None: CURRENT, checksums verified) as in
    ``write_html_report``; returns where it went and how many of the report's plots the
    version lacks (versions built before reports existed, runs without validation)."""
    layout = Layout(Path(root))
    inputs = load_version_report(VersionStore(layout), version_id)
    written = write_html_report(layout, inputs, out)
    return written, len(PLOTS) - len(inputs.plots)


class PublishedReport(NamedTuple):
    """A published version's report: markdown with the plots inline (data URIs, so the
    Prefect UI shows them with no file access), the HTML file written next to the store,
    and the metrics table rows (None when the version has no evaluation)."""

    markdown: str
    html_path: Path
    metrics: list[dict[str, object]] | None


def published_report(root: str, version_id: str) -> PublishedReport:
    """Render the report of published ``version_id`` and write its HTML file."""
    layout = Layout(Path(root))
    inputs = load_version_report(VersionStore(layout), version_id, verify=False)
    markdown = to_markdown(
        report_sections(inputs), lambda p: data_uri(inputs.plots[p]) if p in inputs.plots else None
    )
    html = write_html_report(layout, inputs)
    where = f"`{html.path}`" + (f", shared as `{html.shared}`" if html.shared else "")
    markdown += (
        f"\nThe same report as one HTML file: {where} (or `towerflow report {version_id}`).\n"
    )
    rows = metrics_rows(inputs.evaluation) if inputs.evaluation is not None else None
    return PublishedReport(markdown, html.path, rows)


def failure_markdown(root: str, error: BaseException) -> str:
    """The report of a run that stopped early: why nothing was published and which
    version keeps serving."""
    inputs = ReportInputs(
        version_id=None,
        published=False,
        failure=f"{type(error).__name__}: {error}",
        current=VersionStore(Layout(Path(root))).current(),
    )
    return to_markdown(report_sections(inputs), lambda _p: None)
