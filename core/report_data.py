"""What a run report says, independent of how it is shown: the inputs (gathered from a
staged or published version) and the report's sections, which ``core.report_render``
turns into the run's markdown artifact and ``towerflow report``'s HTML.

Every byte read here goes through ``storage``; nothing here talks to Prefect.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from core.deltas import resolve_chain, verify_chain
from core.evaluation import EvalReport
from core.indexing import describe_params
from core.refs import IndexSummary
from core.training import TrainSummary
from storage import PublishedVersion, VersionFiles, VersionStore, read_json
from storage.errors import StorageError

__all__ = [
    "HISTORY_LIMIT",
    "PLOTS",
    "ReportInputs",
    "Section",
    "history_entry",
    "load_version_report",
    "parent_history",
    "report_sections",
]

log = logging.getLogger(__name__)

# Versions kept in metrics_history.json: a year of nightlies, a few KB each.
HISTORY_LIMIT = 400
# Plot files of a version and their captions, in report order.
PLOTS: dict[str, str] = {
    VersionFiles.PLOT_LOSS: "Training loss per epoch (and the validation metric)",
    VersionFiles.PLOT_RECALL_AT_K: "Recall@K vs K: model, baselines and oracle",
    VersionFiles.PLOT_HISTORY: "Headline metrics across published versions",
}


class ReportInputs(BaseModel):
    """Everything one report shows; fields are None when the run did not get that far."""

    version_id: str | None  # None: nothing was staged
    published: bool
    failure: str | None = None  # why the run did not publish
    current: str | None = None  # CURRENT after the run (what serves)
    data: dict[str, Any] = {}  # snapshot_id, n_users, n_items, n_interactions
    train: TrainSummary | None = None
    evaluation: EvalReport | None = None
    index: IndexSummary | None = None
    history: list[dict[str, Any]] = []  # metrics_history entries, this version last
    plots: dict[str, bytes] = {}  # PLOTS file name -> PNG

    @property
    def previous(self) -> dict[str, Any] | None:
        """The last published version before this one, from the history."""
        older = [h for h in self.history if h.get("version_id") != self.version_id]
        return older[-1] if older else None


class Section(BaseModel):
    """One report section: bullet lines (inline markdown: `code`, **bold**), tables and
    plots (file names of ``PLOTS``)."""

    title: str
    lines: list[str] = []
    tables: list[tuple[list[str], list[list[str]]]] = []
    plots: list[str] = []


def history_entry(
    version_id: str, data: dict[str, Any], report: EvalReport, created_at: str | None = None
) -> dict[str, Any]:
    """This version's line in metrics_history.json: data sizes and metrics at each K."""
    return {
        "version_id": version_id,
        "created_at": created_at,
        "data": data,
        "gate_metric": report.gate_metric,
        "metrics": {
            name: {k: round(v, 6) for k, v in m.items() if "@" in k and "pop" not in k}
            for name, m in report.rankers.items()
        },
    }


def parent_history(store: VersionStore, parent: str | None) -> list[dict[str, Any]]:
    """metrics_history.json of ``parent`` (empty without a parent). A parent from before
    reports existed contributes its manifest metrics as one entry."""
    if parent is None:
        return []
    # Only the history file is read: check it (and the manifest) alone. A damaged parent
    # must not stop the nightly, the path that rebuilds a good version: start afresh.
    try:
        # A delta's report files are its base's (core.deltas).
        version = resolve_chain(store, store.open_version(parent, verify=False)).base
        names = [n for n in (VersionFiles.METRICS_HISTORY,) if n in version.manifest.files]
        store.verify(version.version_id, names)
        if names:
            return list(read_json(version.file(VersionFiles.METRICS_HISTORY)))
        metrics = version.manifest.metrics
        if "rankers" not in metrics:
            return []
        report = EvalReport.model_validate(metrics)
    except (StorageError, ValueError, TypeError) as e:
        log.warning("metric history starts afresh: parent %s unreadable (%s)", parent, e)
        return []
    return [history_entry(parent, {}, report, version.manifest.created_at)]


def _optional_json(version: PublishedVersion, name: str) -> Any:
    return read_json(version.file(name)) if name in version.manifest.files else None


def load_version_report(
    store: VersionStore, version_id: str | None = None, *, verify: bool = True
) -> ReportInputs:
    """Report inputs of a published version (default: CURRENT), checksums verified unless
    ``verify`` is False. Versions derived by the new-items flow carry their nightly
    parent's report files; a delta's are those of the complete version under it."""
    opened = (
        store.open_current(verify=False)
        if version_id is None
        else store.open_version(version_id, verify=False)
    )
    chain = resolve_chain(store, opened)
    if verify:
        chain = verify_chain(store, chain)
    version, m = chain.base, chain.head.manifest
    training = _optional_json(version, VersionFiles.TRAINING)
    history = _optional_json(version, VersionFiles.METRICS_HISTORY) or []
    index = m.extra.get("index")
    data = history[-1].get("data", {}) if history else {}
    return ReportInputs(
        version_id=m.version_id,
        published=True,
        current=store.current(),
        data=data or {"snapshot_id": m.lineage.data_snapshot, "n_items": m.item_count},
        train=None if training is None else TrainSummary.model_validate(training),
        evaluation=EvalReport.model_validate(m.metrics) if "rankers" in m.metrics else None,
        index=None if index is None else IndexSummary.model_validate(index),
        history=history,
        plots={n: version.file(n).read_bytes() for n in PLOTS if n in version.manifest.files},
    )


def _ordered(rankers: dict[str, Any]) -> list[str]:
    """The model first, the oracle (the ceiling) last, the rest as given."""
    rank = {"model": 0, "oracle": 2}
    return sorted(rankers, key=lambda n: rank.get(n, 1))


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _outcome(r: ReportInputs) -> Section:
    if r.published:
        title = f"Nightly run: published `{r.version_id}`"
        lines = [f"**Published** version `{r.version_id}`; CURRENT is `{r.current}`."]
    else:
        title = "Nightly run: NOT published"
        lines = [
            f"**Not published**: {r.failure or 'unknown reason'}",
            f"CURRENT is unchanged: `{r.current}` keeps serving.",
        ]
    d = r.data
    if d:
        lines.append(
            f"Data snapshot `{d.get('snapshot_id')}`: {d.get('n_users', 0):,} users, "
            f"{d.get('n_items', 0):,} items, {d.get('n_interactions', 0):,} interactions"
        )
    return Section(title=title, lines=lines)


def _training(t: TrainSummary) -> Section:
    lines = [
        f"{t.n_examples:,} examples, {len(t.epoch_loss)} epochs on {t.device}, "
        f"{t.examples_per_s:,.0f} examples/s, {sum(t.epoch_seconds):.1f} s",
        f"loss {t.epoch_loss[0]:.4f} -> {t.epoch_loss[-1]:.4f}"
        + (f"; best epoch {t.best_epoch}" if t.best_epoch is not None else "")
        + ("; stopped early" if t.stopped_early else ""),
    ]
    if t.recipe_validation:
        # selection: the recipe chosen on validation, and what each candidate scored.
        scores = ", ".join(f"{name} {score:.4f}" for name, score in t.recipe_validation.items())
        lines.append(f"recipe chosen on validation: {t.recipe} ({scores})")
    if t.blend_share is not None:
        # kind 'hybrid': how much of the score the linear part carries, and why.
        tried = ", ".join(f"{share} {score:.4f}" for share, score in t.blend_validation.items())
        lines.append(
            f"hybrid blend chosen on validation: linear share {t.blend_share:g}"
            + (f" ({tried})" if tried else " (no validation split: 0.5)")
        )
    rows = [
        [str(i + 1), f"{loss:.4f}", _fmt(val), f"{sec:.1f}"]
        for i, (loss, val, sec) in enumerate(
            zip(
                t.epoch_loss,
                t.epoch_validation or [None] * len(t.epoch_loss),
                t.epoch_seconds,
                strict=False,
            )
        )
    ]
    return Section(
        title="Training",
        lines=lines,
        tables=[(["epoch", "loss", "validation", "seconds"], rows)],
        plots=[VersionFiles.PLOT_LOSS],
    )


def _quality(e: EvalReport, previous: dict[str, Any] | None) -> Section:
    ks = sorted({int(k.split("@")[1]) for k in e.rankers["model"] if k.startswith("recall@")})
    cols = [f"{m}@{k}" for m in ("recall", "ndcg", "hit_rate") for k in ks] + [f"coverage@{ks[-1]}"]
    oracle = e.rankers.get("oracle", {}).get(e.gate_metric)
    model = e.rankers["model"][e.gate_metric]
    lines = [
        f"{e.n_users:,} test users, full ranking over {e.n_items:,} items, protocol `{e.protocol}`",
        f"Quality gate: model {e.gate_metric} {model:.4f} "
        f"{'>=' if e.gate_passed else '<'} {e.gate_threshold:.4f} "
        f"({'passed' if e.gate_passed else 'FAILED'})",
    ]
    if oracle:
        lines.append(f"Model reaches {100 * model / oracle:.1f}% of the oracle's {e.gate_metric}")
    rows = [[n, *(_fmt(e.rankers[n].get(c)) for c in cols)] for n in _ordered(e.rankers)]
    tables = [(["ranker", *cols], rows)]
    if previous is not None:
        before = previous.get("metrics", {}).get("model", {})
        change = [
            [c, _fmt(before.get(c)), _fmt(e.rankers["model"].get(c)), _delta(before.get(c), e, c)]
            for c in cols
            if c in before
        ]
        if change:
            lines.append(f"Change vs the previous published version `{previous['version_id']}`:")
            tables.append((["model metric", "previous", "this run", "change"], change))
    else:
        lines.append("No previous published version to compare with.")
    return Section(
        title="Quality", lines=lines, tables=tables, plots=[VersionFiles.PLOT_RECALL_AT_K]
    )


def _delta(before: float | None, e: EvalReport, col: str) -> str:
    now = e.rankers["model"].get(col)
    if before is None or now is None:
        return "-"
    rel = f" ({100 * (now - before) / before:+.1f}%)" if before else ""
    return f"{now - before:+.4f}{rel}"


def _index(ix: IndexSummary) -> Section:
    knob = describe_params(ix.params) or (
        f"{ix.knob}={ix.knob_value}" if ix.knob else "exact search"
    )
    lines = [
        f"`{ix.factory}`: {ix.n_items:,} items x {ix.dim} dims, built in "
        f"{ix.build_seconds:.2f} s, {ix.bytes / max(ix.n_items, 1):.0f} bytes/item",
        f"{knob}: measured Recall@{ix.k} {ix.recall:.4f} vs exact search (target "
        f"{ix.target_recall}), single query p50 {ix.single_query_p50_ms:.3f} ms, p99 "
        f"{ix.single_query_p99_ms:.3f} ms ({ix.tune_queries:,} tuning queries)",
    ]
    return Section(title="Index", lines=lines)


def _cold(cold: dict[str, Any]) -> Section:
    rankers = cold["rankers"]
    # Cut-offs are capped at the number of new items, so read them off the metrics.
    ks = sorted({int(k.split("@")[1]) for k in rankers.get("model", {}) if k.startswith("recall@")})
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks[:2]] + [
        f"hit_rate@{k}" for k in ks[:1]
    ]
    rows = [[n, *(_fmt(rankers[n].get(c)) for c in cols)] for n in _ordered(rankers)]
    return Section(
        title="Cold start",
        lines=[
            f"{cold['n_items']:,} items first seen at test time, ranked among themselves for "
            f"{cold['n_users']:,} users from content features alone"
        ],
        tables=[(["ranker", *cols], rows)],
    )


def report_sections(r: ReportInputs) -> list[Section]:
    """The report, top to bottom; sections for steps the run did not reach are left out."""
    sections = [_outcome(r)]
    if r.train is not None:
        sections.append(_training(r.train))
    if r.evaluation is not None:
        sections.append(_quality(r.evaluation, r.previous))
        if r.evaluation.cold_start:
            sections.append(_cold(r.evaluation.cold_start))
    if r.index is not None:
        sections.append(_index(r.index))
    if len(r.history) > 1 or VersionFiles.PLOT_HISTORY in r.plots:
        sections.append(
            Section(
                title="History",
                lines=[f"{len(r.history)} published nightly versions in the record"],
                plots=[VersionFiles.PLOT_HISTORY],
            )
        )
    return sections
