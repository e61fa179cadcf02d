"""The nightly chooses its training recipe on validation (``selection`` in the config,
``core.recipes``, ``core.training``): candidates are checked at load time, every one is
trained, the best validation score is published, and the choice is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import NightlyConfig, load_config
from core.ladder import catalogue_skip
from core.nightly import run_nightly
from core.recipes import CONFIGURED, SelectionConfig, candidates
from core.resume import train_key
from model.config import TowerConfig, TrainConfig


def _nightly(root: Path, selection: dict[str, object]) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            # A configured recipe that barely learns: 1 epoch at a tiny learning rate.
            "train": {"epochs": 2, "lr": 1e-5, "sparse_lr": 1e-5},
            "evaluation": {"gate_min_lift": 0.0},
            "runtime": {"storage_root": str(root), "resume": False},
            "selection": selection,
        }
    )


def test_bad_recipes_fail_at_load_time_naming_the_recipe() -> None:
    with pytest.raises(ValueError, match=r"recipe 'fast'.*lr"):
        NightlyConfig.model_validate(
            {"selection": {"recipes": [{"name": "fast", "train": {"lr": -1}}]}}
        )
    with pytest.raises(ValueError, match=r"recipe 'typo': embeding_dim: Extra inputs"):
        NightlyConfig.model_validate(
            {"selection": {"recipes": [{"name": "typo", "tower": {"embeding_dim": 8}}]}}
        )
    with pytest.raises(ValueError, match="unique: a repeated"):
        SelectionConfig.model_validate({"recipes": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ValueError, match="config's own recipe"):
        SelectionConfig.model_validate({"recipes": [{"name": CONFIGURED}]})


def test_candidates_put_the_configured_recipe_first_and_skip_the_pointwise_rung() -> None:
    sel = SelectionConfig.model_validate(
        {"ladder": True, "recipes": [{"name": "wide", "tower": {"embedding_dim": 128}}]}
    )
    cands = candidates(sel, TowerConfig(), TrainConfig())
    names = [name for name, _, _ in cands]
    assert names[0] == CONFIGURED and names[-1] == "wide"
    assert "bce pointwise" not in names and "+ mixed negatives" in names
    assert cands[-1][1].embedding_dim == 128 and cands[0][1] == TowerConfig()
    assert not SelectionConfig().enabled
    assert candidates(SelectionConfig(), TowerConfig(), TrainConfig()) == [
        (CONFIGURED, TowerConfig(), TrainConfig())
    ]


def test_a_choice_changes_the_resume_key_and_no_choice_keeps_it() -> None:
    from core.config import DataConfig, EvalConfig
    from core.refs import SnapshotRef

    snap = SnapshotRef(root="/r", snapshot_id="s", n_users=1, n_items=1, n_interactions=1)
    args = (snap, DataConfig(), TowerConfig(), TrainConfig(), EvalConfig())
    plain = train_key(*args)
    assert train_key(*args, SelectionConfig()) == plain
    chosen = SelectionConfig.model_validate({"recipes": [{"name": "x", "train": {"lr": 0.01}}]})
    assert train_key(*args, chosen) != plain


@pytest.mark.e2e
def test_the_nightly_publishes_the_recipe_that_wins_on_validation(tmp_path: Path) -> None:
    cfg = _nightly(
        tmp_path,
        {
            "recipes": [
                {
                    "name": "sensible",
                    "tower": {"embedding_dim": 32},
                    "train": {"lr": 3e-3, "sparse_lr": 1e-2},
                }
            ]
        },
    )
    version = run_nightly(cfg)
    folder = tmp_path / "versions" / version
    training = json.loads((folder / "training.json").read_text())
    scores = training["recipe_validation"]
    assert list(scores) == [CONFIGURED, "sensible"]
    assert scores["sensible"] > scores[CONFIGURED]
    assert training["recipe"] == "sensible"
    # The published model is the chosen recipe's: its tower shape, its vectors in the index.
    spec = json.loads((folder / "model.json").read_text())
    assert spec["tower"]["embedding_dim"] == 32
    import faiss

    assert faiss.read_index(str(folder / "index.faiss")).d == 32
    # The run report says which recipe won and what each scored.
    from core.report_data import load_version_report, report_sections
    from storage import Layout, VersionStore

    inputs = load_version_report(VersionStore(Layout(tmp_path)), version)
    (training_section,) = [s for s in report_sections(inputs) if s.title == "Training"]
    assert any(
        line.startswith("recipe chosen on validation: sensible (configured ")
        for line in training_section.lines
    )


def test_a_choice_needs_a_validation_split(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {scale: tiny, val_frac: 0.0}\n"
        "selection: {recipes: [{name: other, train: {lr: 0.01}}]}\n"
        f"runtime: {{storage_root: {tmp_path}}}\n"
    )
    try:
        cfg = load_config(path, {})
    except ValueError:
        pytest.skip("this data config cannot express a split without validation")
    with pytest.raises(ValueError, match="no validation interactions"):
        run_nightly(cfg)


def test_the_ladder_candidates_follow_the_protocol_rule() -> None:
    sel = SelectionConfig(ladder=True)
    names = {n for n, _, _ in candidates(sel, TowerConfig(), TrainConfig(), "random_ratio")}
    assert "+ history" not in names and "+ mixed negatives" in names
    assert "+ history" in {
        n for n, _, _ in candidates(sel, TowerConfig(), TrainConfig(), "temporal")
    }
    # The linear tower reads a bag of items, not a sequence: it runs under every protocol.
    assert "linear" in names
    linear = next(c for c in candidates(sel, TowerConfig(), TrainConfig()) if c[0] == "linear")
    assert linear[1].kind == "linear" and linear[1].history_len > 0


def test_catalogue_limits_name_the_recipe_that_cannot_train(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    linear = TowerConfig(kind="linear", history_len=10)
    full = TrainConfig(loss="full_softmax")
    assert catalogue_skip(linear, TrainConfig(), 20_000) is None
    over = catalogue_skip(linear, TrainConfig(), 20_001) or ""
    assert "linear tower's closed-form limit" in over
    hybrid = TowerConfig(kind="hybrid", history_len=10)
    assert catalogue_skip(hybrid, TrainConfig(), 20_000) is None
    assert "hybrid tower's closed-form limit" in (
        catalogue_skip(hybrid, TrainConfig(), 20_001) or ""
    )
    assert catalogue_skip(TowerConfig(), full, 50_000) is None
    assert "full softmax's limit" in (catalogue_skip(TowerConfig(), full, 50_001) or "")
    assert catalogue_skip(TowerConfig(), TrainConfig(), 10**9) is None


@pytest.mark.e2e
def test_no_trainable_candidate_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.ladder.FULL_SOFTMAX_MAX_ITEMS", 1)
    cfg = NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 1, "loss": "full_softmax"},
            "runtime": {"storage_root": str(tmp_path), "resume": False},
            "selection": {"recipes": [{"name": "warmer", "train": {"temperature": 0.3}}]},
        }
    )
    with pytest.raises(ValueError, match="no candidate recipe can train"):
        run_nightly(cfg)
    assert not list((tmp_path / "versions").glob("v*"))  # nothing published
