"""The ablation picks the rung to deploy on validation, never on test
(``core.ablation``: ``VariantRun.validation``, ``choose_rung``, ``AblationResult.chosen``,
the table's validation column, chosen mark and footer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.ablation import (
    HISTORY_UNDER_RANDOM,
    AblationResult,
    VariantRun,
    choose_rung,
    ladder,
    protocol_skip,
    render_table,
    run_ablation,
)
from core.config import NightlyConfig


def _config(root: Path, **data: object) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny", **data},
            # Early stopping: fit keeps the best epoch's weights, which are then the final
            # model the rung's validation score is measured on.
            "train": {"epochs": 3, "early_stopping_patience": 1},
            "runtime": {"storage_root": str(root)},
        }
    )


def _run(name: str, validation: float | None) -> VariantRun:
    return VariantRun(name, 1.0, 2, None, None, validation, (0.5, 0.4))


def _result(validations: dict[str, float | None], test_r50: dict[str, float]) -> AblationResult:
    """A hand-made result: rungs with the given validation scores and test Recall@50
    (Recall@10 and NDCG@10 a tenth of it), plus a popularity row."""
    rankers = {
        name: {"recall@10": r / 10, "recall@50": r, "ndcg@10": r / 10}
        for name, r in {**test_r50, "popularity": 0.01}.items()
    }
    runs = [_run(name, v) for name, v in validations.items()]
    return AblationResult("snap", "temporal", 100, 50, rankers, runs, "recall@50")


def _row(table: str, name: str) -> list[str]:
    (line,) = [x for x in table.splitlines() if x.startswith(f"| {name} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def _header(table: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith("| ranker |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.e2e
def test_every_rung_is_scored_on_validation_and_the_best_one_is_chosen(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    variants = ladder(uniform_negatives=32, history_len=4)[:3]
    res = run_ablation(cfg, variants, str(tmp_path))

    assert [r.name for r in res.runs] == [v.name for v in variants]
    assert res.validation_metric == "recall@50"
    for run in res.runs:
        assert run.validation is not None and 0.0 < run.validation <= 1.0, run
        # Measured on the final model, which early stopping set to the best epoch's
        # weights: the same score training saw at that epoch (same users, same metric).
        assert run.best_epoch is not None and run.val_metric is not None
        assert run.validation == pytest.approx(run.val_metric, abs=1e-6), run
    # The argmax of validation, the earlier rung on a tie, computed here from the runs.
    top = max(r.validation for r in res.runs if r.validation is not None)
    expected = next(r.name for r in res.runs if r.validation == top)
    assert res.chosen == expected
    assert res.to_json()["chosen"] == expected
    assert [r["validation"] for r in res.to_json()["runs"]] == [r.validation for r in res.runs]

    table = render_table(res)
    head = _header(table)
    val_col, mark_col = head.index("validation recall@50"), head.index("chosen")
    for run in res.runs:
        row = _row(table, run.name)
        assert row[val_col] == f"{run.validation:.4f}"
        assert row[mark_col] == ("✓" if run.name == expected else "")
    assert _row(table, "popularity")[mark_col] == ""
    chosen_run = next(r for r in res.runs if r.name == expected)
    test = res.rankers[expected]
    assert (
        f"Chosen on validation (recall@50 = {chosen_run.validation:.4f}): `{expected}`; "
        f"its test Recall@10 {test['recall@10']:.4f}, NDCG@10 {test['ndcg@10']:.4f}"
    ) in table
    assert "Classical baseline regularisation chosen on validation" in table


@pytest.mark.e2e
def test_without_a_validation_split_no_rung_is_chosen(tmp_path: Path) -> None:
    cfg = _config(tmp_path, val_frac=0.0)
    res = run_ablation(cfg, ladder(uniform_negatives=32, history_len=4)[1:2], str(tmp_path))
    (run,) = res.runs
    assert run.validation is None and run.val_metric is None
    assert res.chosen is None and res.to_json()["chosen"] is None
    table = render_table(res)
    assert "✓" not in table
    assert "No validation split: no rung chosen" in table


def test_the_tie_goes_to_the_earlier_simpler_rung() -> None:
    runs = [_run("a", 0.2), _run("b", 0.3), _run("c", 0.3), _run("d", 0.1)]
    assert choose_rung(runs) == "b"
    assert choose_rung([_run("a", 0.3), _run("b", 0.3)]) == "a"
    # A rung without a score never wins; a later strictly better one does.
    assert choose_rung([_run("a", None), _run("b", 0.1), _run("c", 0.11)]) == "c"
    assert choose_rung([_run("a", None), _run("b", None)]) is None
    assert choose_rung([]) is None


def test_the_test_set_never_picks_the_rung_and_is_shown_for_reference() -> None:
    # "b" is best on validation, "c" best on test: "b" is chosen, "c" only named.
    res = _result({"a": 0.20, "b": 0.30, "c": 0.25}, {"a": 0.2, "b": 0.3, "c": 0.4})
    assert res.chosen == "b"
    table = render_table(res)
    mark = _header(table).index("chosen")
    assert [_row(table, n)[mark] for n in ("a", "b", "c", "popularity")] == ["", "✓", "", ""]
    footer = table.splitlines()[-1]
    assert footer == (
        "Chosen on validation (recall@50 = 0.3000): `b`; its test Recall@10 0.0300, "
        "NDCG@10 0.0300 (the best rung by test recall@50 would be `c`: shown for "
        "reference only, not a choice)."
    )
    same = render_table(_result({"a": 0.1, "b": 0.3}, {"a": 0.2, "b": 0.3}))
    assert same.splitlines()[-1].endswith(
        "(also the best rung by test recall@50: shown for reference, not a choice)."
    )


def test_a_split_without_validation_chooses_nothing() -> None:
    res = _result({"a": None, "b": None}, {"a": 0.2, "b": 0.3})
    assert res.chosen is None
    assert res.to_json()["chosen"] is None and res.to_json()["validation_metric"] == "recall@50"
    table = render_table(res)
    head = _header(table)
    assert _row(table, "b")[head.index("validation recall@50")] == ""
    assert "✓" not in table and "best rung by test" not in table
    assert table.splitlines()[-1].startswith("No validation split: no rung chosen")


def test_history_rungs_sit_out_the_random_split_and_the_table_says_why() -> None:
    rungs = {v.name: v for v in ladder(uniform_negatives=32, history_len=4, hard=8)}
    for protocol in ("temporal", "leave_one_out"):
        assert all(protocol_skip(v, protocol) is None for v in rungs.values())
    skipped = {n for n, v in rungs.items() if protocol_skip(v, "random_ratio")}
    assert skipped == {"+ history", "+ hard negatives"}  # both read the history
    assert rungs["linear"].tower["history_len"] > 0  # a bag, not a sequence: it runs
    assert rungs["hybrid"].tower["history_len"] > 0  # its MLP part has no history feature
    res = _result({"a": 0.2}, {"a": 0.2})
    res = AblationResult(
        res.snapshot_id, "random_ratio", res.n_users, res.n_items, res.rankers, res.runs,
        res.validation_metric, skipped={"+ history": HISTORY_UNDER_RANDOM},
    )  # fmt: skip
    assert (
        render_table(res).splitlines()[-1] == f"Not trained: `+ history`, {HISTORY_UNDER_RANDOM}."
    )
    assert res.to_json()["skipped"] == {"+ history": HISTORY_UNDER_RANDOM}


@pytest.mark.e2e
def test_a_random_split_ablation_does_not_train_the_history_rung(tmp_path: Path) -> None:
    cfg = _config(tmp_path, protocol="random_ratio")
    variants = [
        v for v in ladder(uniform_negatives=32, history_len=4) if v.name in {"+ logQ", "+ history"}
    ]
    res = run_ablation(cfg, variants, str(tmp_path))
    assert [r.name for r in res.runs] == ["+ logQ"]
    assert set(res.skipped) == {"+ history"} and "+ history" not in res.rankers


def test_the_table_names_a_hybrids_blend_chosen_on_validation() -> None:
    res = _result({"linear": 0.2, "hybrid": 0.3}, {"linear": 0.2, "hybrid": 0.3})
    hybrid = VariantRun("hybrid", 1.0, 3, 3, 0.3, 0.3, (0.5, 0.4, 9.0), blend_share=0.4)
    res = AblationResult(res.snapshot_id, res.protocol, res.n_users, res.n_items, res.rankers,
                         [res.runs[0], hybrid], res.validation_metric)  # fmt: skip
    lines = render_table(res).splitlines()
    assert "Blend of `hybrid` chosen on validation: the linear part's share 0.4." in lines
    assert not any(line.startswith("Blend of `linear`") for line in lines)
    assert res.to_json()["runs"][1]["blend_share"] == 0.4
