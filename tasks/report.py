"""Report step: the run's markdown summary and metrics table as Prefect artifacts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.evaluate import EvalReport
from tasks.refs import IndexSummary, SnapshotRef
from tasks.train import TrainSummary

__all__ = ["metrics_rows", "post_report", "render_summary"]


def metrics_rows(report: EvalReport) -> list[dict[str, object]]:
    """One row per ranker with every metric, rounded for display."""
    return [
        {"ranker": name, **{k: round(v, 4) for k, v in metrics.items()}}
        for name, metrics in report.rankers.items()
    ]


def render_summary(
    version_id: str,
    snapshot: SnapshotRef,
    train: TrainSummary,
    report: EvalReport,
    index: IndexSummary,
) -> str:
    """Markdown summary of one nightly run."""
    metric = report.gate_metric
    model = report.rankers["model"][metric]
    lines = [
        f"# Nightly run: published `{version_id}`",
        "",
        f"- data snapshot `{snapshot.snapshot_id}`: {snapshot.n_users:,} users, "
        f"{snapshot.n_items:,} items, {snapshot.n_interactions:,} interactions",
        f"- training: {train.n_examples:,} examples, {len(train.epoch_loss)} epochs on "
        f"{train.device}, {train.examples_per_s:,.0f} examples/s, loss "
        f"{train.epoch_loss[0]:.4f} -> {train.epoch_loss[-1]:.4f}",
        f"- quality gate: model {metric} {model:.4f} >= {report.gate_threshold:.4f}",
        f"- index: `{index.factory}`, {index.n_items:,} items x {index.dim} dims, "
        f"built in {index.build_seconds:.2f} s, {index.bytes / max(index.n_items, 1):.0f} "
        f"bytes/item; {index.knob or 'exact search'}"
        f"{'=' + str(index.knob_value) if index.knob else ''}: Recall@{index.k} "
        f"{index.recall:.4f} vs exact (target {index.target_recall}), single query p50 "
        f"{index.single_query_p50_ms:.3f} ms, p99 {index.single_query_p99_ms:.3f} ms",
        "",
        f"## Test metrics ({report.n_users:,} users, full ranking over {report.n_items:,} items)",
        "",
    ]
    rows = metrics_rows(report)
    header = list(rows[0])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    cold = report.cold_start
    if cold:
        lines += [
            "",
            f"## Cold start ({cold['n_items']:,} items first seen at test time, ranked among "
            f"themselves for {cold['n_users']:,} users from content features alone)",
            "",
            "| ranker | " + " | ".join(_COLD_COLUMNS) + " |",
            "|" + "---|" * (len(_COLD_COLUMNS) + 1),
        ]
        for name, metrics in cold["rankers"].items():
            cells = [f"{metrics[c]:.4f}" if c in metrics else "" for c in _COLD_COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_COLD_COLUMNS = ("recall@10", "recall@50", "ndcg@10", "ndcg@50", "hit_rate@10")


@task(name="post-report")
def post_report(
    version_id: str,
    snapshot: SnapshotRef,
    train: TrainSummary,
    report: EvalReport,
    index: IndexSummary,
) -> str:
    """Attach the summary (key ``nightly-summary``) and metrics table (``nightly-metrics``)."""
    summary = render_summary(version_id, snapshot, train, report, index)
    create_markdown_artifact(
        key="nightly-summary", markdown=summary, description=f"Nightly run, version {version_id}"
    )
    create_table_artifact(
        key="nightly-metrics",
        table=metrics_rows(report),
        description=f"Test metrics of version {version_id}",
    )
    return summary
