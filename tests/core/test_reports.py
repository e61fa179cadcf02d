"""The run report without Prefect: sections from hand-built inputs, markdown and HTML
rendering, plots, and the new-items report."""

from __future__ import annotations

import re

import pytest

from core.evaluation import EvalReport
from core.items import RecordSummary
from core.items_report import render_items_report
from core.plots import history_plot, loss_plot, recall_curve_plot
from core.refs import IndexSummary
from core.report_data import ReportInputs, history_entry, report_sections
from core.report_render import to_html, to_markdown
from core.training import TrainSummary
from storage import VersionFiles

_PNG = b"\x89PNG\r\n\x1a\n"


def _eval(model_r50: float) -> EvalReport:
    return EvalReport(
        n_users=100,
        n_items=600,
        rankers={
            "popularity": {"recall@10": 0.05, "recall@50": 0.20, "ndcg@10": 0.04,
                           "hit_rate@10": 0.3, "coverage@50": 0.1, "avg_pop@50": 30.0},
            "model": {"recall@10": 0.20, "recall@50": model_r50, "ndcg@10": 0.15,
                      "hit_rate@10": 0.6, "coverage@50": 0.5, "avg_pop@50": 10.0},
            "oracle": {"recall@10": 0.30, "recall@50": 0.80, "ndcg@10": 0.25,
                       "hit_rate@10": 0.8, "coverage@50": 0.6, "avg_pop@50": 9.0},
        },
        gate_metric="recall@50",
        gate_threshold=0.22,
        gate_passed=True,
        recall_curve={"model": {1: 0.01, 10: 0.2, 50: model_r50}, "oracle": {1: 0.05, 50: 0.8}},
    )  # fmt: skip


def _train() -> TrainSummary:
    return TrainSummary(
        device="cpu",
        n_examples=1000,
        n_known_users=10,
        n_known_items=20,
        epoch_loss=[6.0, 5.5, 5.2],
        epoch_seconds=[1.0, 1.0, 1.0],
        examples_per_s=1000.0,
        epoch_validation=[0.1, 0.3, 0.25],
        best_epoch=2,
        stopped_early=True,
    )


def _index() -> IndexSummary:
    return IndexSummary(
        factory="IVF64,Flat", n_items=600, dim=32, build_seconds=0.5, bytes=80_000,
        knob="nprobe", knob_value=8, k=100, target_recall=0.95, recall=0.97,
        single_query_p50_ms=0.05, single_query_p99_ms=0.2, tune_queries=400, trials=[],
    )  # fmt: skip


def _published(model_r50: float = 0.60) -> ReportInputs:
    data = {"snapshot_id": "s1", "n_users": 400, "n_items": 600, "n_interactions": 12_000}
    ev = _eval(model_r50)
    return ReportInputs(
        version_id="v2",
        published=True,
        current="v2",
        data=data,
        train=_train(),
        evaluation=ev,
        index=_index(),
        history=[history_entry("v1", data, _eval(0.50)), history_entry("v2", data, ev)],
        plots={VersionFiles.PLOT_LOSS: _PNG + b"loss"},
    )


def test_sections_cover_every_step_the_run_reached() -> None:
    titles = [s.title for s in report_sections(_published())]
    assert titles == ["Nightly run: published `v2`", "Training", "Quality", "Index", "History"]


def test_quality_section_compares_with_the_previous_version() -> None:
    (quality,) = [s for s in report_sections(_published(0.60)) if s.title == "Quality"]
    assert "Model reaches 75.0% of the oracle's recall@50" in quality.lines
    assert any("Change vs the previous published version `v1`" in x for x in quality.lines)
    header, rows = quality.tables[1]
    assert header == ["model metric", "previous", "this run", "change"]
    r50 = next(r for r in rows if r[0] == "recall@50")
    assert r50 == ["recall@50", "0.5000", "0.6000", "+0.1000 (+20.0%)"]
    # The model leads the metrics table and the oracle closes it.
    assert [r[0] for r in quality.tables[0][1]] == ["model", "popularity", "oracle"]


def test_history_entry_keeps_metrics_at_k_without_popularity() -> None:
    entry = history_entry("v1", {}, _eval(0.5))
    assert "avg_pop@50" not in entry["metrics"]["model"]
    assert entry["metrics"]["model"]["recall@50"] == 0.5 and entry["gate_metric"] == "recall@50"


def test_failed_run_says_why_and_what_keeps_serving() -> None:
    inputs = ReportInputs(
        version_id=None, published=False, failure="QualityGateError: too low", current="v1"
    )
    (only,) = report_sections(inputs)
    md = to_markdown([only], lambda _p: None)
    assert md.startswith("# Nightly run: NOT published")
    assert "**Not published**: QualityGateError: too low" in md
    assert "CURRENT is unchanged: `v1` keeps serving." in md


def test_markdown_escapes_table_cells_and_links_plots() -> None:
    inputs = _published()
    md = to_markdown(report_sections(inputs), lambda p: f"https://x/{p}")
    assert "| model | 0.2000 |" in md
    caption = "Training loss per epoch (and the validation metric)"
    assert f"![{caption}](https://x/{VersionFiles.PLOT_LOSS})" in md
    assert md.count("![") == 3  # every plot of every section gets the URL the caller gives


def test_html_is_standalone_escaped_and_embeds_only_existing_plots() -> None:
    inputs = _published()
    inputs.failure = None
    inputs.data["snapshot_id"] = "<script>alert(1)</script>"
    html = to_html(report_sections(inputs), inputs.plots, "now")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("<img ") == 1 and 'src="data:image/png;base64,' in html
    assert "<code>v2</code>" in html and "http://" not in html and "https://" not in html


_HISTORY = [
    {"version_id": "v20261129T190102123Z-ab12cd", "metrics": {"model": {"r": 0.2}}},
    {"version_id": "v20261130T190102123Z-ab12ce", "metrics": {"model": {"r": 0.3}}},
]


@pytest.mark.parametrize(
    "render",
    [
        lambda: loss_plot([3.0, 2.0, 1.5], [0.1, None, 0.3], "recall@50", best_epoch=3),
        lambda: recall_curve_plot({"model": {1: 0.1, 10: 0.3}, "popularity": {1: 0.0, 10: 0.1}}),
        lambda: history_plot(_HISTORY, "r"),
    ],
)
def test_plots_render_headless_to_png(render: object) -> None:
    png = render()  # type: ignore[operator]
    assert png.startswith(_PNG) and len(png) > 5_000


def test_plots_without_data_are_errors() -> None:
    with pytest.raises(ValueError, match="no epochs"):
        loss_plot([])
    with pytest.raises(ValueError, match="no Recall@K curve"):
        recall_curve_plot({"model": {}})
    with pytest.raises(ValueError, match="'recall@50'"):
        history_plot([{"version_id": "v1", "metrics": {"model": {"ndcg@10": 0.1}}}], "recall@50")


def _recorded(**kw: object) -> RecordSummary:
    base: dict[str, object] = dict(
        event_id="e1", operation="create", duplicate=False, received=10, accepted=8,
        rejected=2, changed=6, head=42, inserted=4, updated=2,
        reasons={"content has 3 values, expected 16": 2},
    )  # fmt: skip
    return RecordSummary.model_validate(base | kw)


def test_items_report_counts_each_outcome_and_groups_reasons() -> None:
    md = render_items_report(_recorded(), "v9")
    assert md.startswith("# Items event `e1` (create)")
    for row in ("| inserted (new items) | 4 |", "| updated (new content for served items) | 2 |",
                "| unchanged (same content as recorded) | 2 |", "| rejected | 2 |",
                "| content has 3 values, expected 16 | 2 |"):  # fmt: skip
        assert row in md, row
    assert "CURRENT `v9`" in md


def test_items_report_for_retirements_and_duplicates() -> None:
    retire = render_items_report(
        _recorded(operation="retire", inserted=0, updated=6, reasons={}), "v9"
    )
    assert "| retired | 6 |" in retire and "Rejection reasons" not in retire
    dup = render_items_report(_recorded(duplicate=True), "v9")
    assert "**Duplicate**" in dup and "| inserted" not in dup


def test_items_report_escapes_markdown_in_reasons() -> None:
    hostile = "item_id 'x' | <img src=x onerror=1> `code` [link](http://h) **b**\nnext line"
    md = render_items_report(_recorded(reasons={hostile: 1}), "v9")
    row = next(line for line in md.splitlines() if "onerror" in line)
    assert row.startswith("| ") and row.endswith(" | 1 |") and "next line" in row
    cell = row[2:-6]
    unescaped = re.sub(r"\\.", "", cell)  # drop every backslash-escaped character
    assert not set(unescaped) & set("\\`*_[]<>|"), cell  # nothing markdown would act on
