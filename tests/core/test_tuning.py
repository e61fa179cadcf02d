"""``towerflow tune`` (``core.tuning``, ``core.tuning_report``, ``cli.tune``): the search
chooses on validation, starts from the config's own recipe, is reproducible by seed,
keeps to its budget, survives failing trials, and writes a config the nightly takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import core.tuning as tuning
from core.config import NightlyConfig, load_config
from core.tuning import TuneBudget, TuneResult, run_tuning
from core.tuning_report import render_test_table, render_trials, trials_plot, tuned_config_yaml
from model.config import TowerConfig

pytestmark = pytest.mark.e2e


def _config(root: Path, epochs: int = 2) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": epochs, "early_stopping_patience": 1},
            "runtime": {"storage_root": str(root)},
        }
    )


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[NightlyConfig, TuneResult]:
    root = tmp_path_factory.mktemp("tune")
    cfg = _config(root)
    return cfg, run_tuning(cfg, str(root), TuneBudget(trials=4), seed=3, threads=1)


def test_trial_zero_is_the_config_recipe_and_the_best_is_chosen_on_validation(
    tuned: tuple[NightlyConfig, TuneResult],
) -> None:
    cfg, result = tuned
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    base = result.trials[0]
    assert base.params["temperature"] == cfg.train.temperature
    assert base.params["lr"] == cfg.train.lr
    assert base.params["weight_decay"] == 0.0 and base.params["id_l2"] == 0.0
    # Trial 1: the base with the ladder's item bias and mixed negatives; trial 2 the same,
    # wide and linear.
    assert result.trials[1].params["item_bias"] is True
    assert result.trials[1].params["uniform_negatives"] == 1024
    wide = result.trials[2].params
    assert (wide["embedding_dim"], wide["id_dim"], wide["hidden"]) == (256, 256, "linear")
    complete = [t for t in result.trials if t.state == "complete"]
    assert complete and all(t.validation is not None for t in complete)
    best = max(complete, key=lambda t: t.validation or 0.0)
    assert result.best_number == best.number
    if best.number == 0:
        assert result.tower == cfg.tower and result.train == cfg.train
    else:
        # The written recipe is the chosen trial's, parameter for parameter.
        assert result.train.temperature == best.params["temperature"]
        assert result.tower.embedding_dim == best.params["embedding_dim"]
        assert result.train.early_stopping_patience == best.params["patience"]
    # Test is read once, after the search: the base and tuned models beside the references.
    assert {"base recipe", "tuned", "popularity", "oracle"} <= set(result.rankers)
    assert result.rankers["tuned"]["recall@50"] > result.rankers["popularity"]["recall@50"]


def test_the_tuned_config_is_one_the_nightly_takes(
    tuned: tuple[NightlyConfig, TuneResult], tmp_path: Path
) -> None:
    cfg, result = tuned
    raw = {"data": {"scale": "tiny"}, "evaluation": {"gate_metric": "recall@50"}}
    path = tmp_path / "tuned.yaml"
    path.write_text(tuned_config_yaml(raw, result, "tuned by a test\nline two"))
    text = path.read_text()
    assert text.startswith("# tuned by a test\n# line two\n")
    loaded = load_config(path, {})
    assert loaded.tower == result.tower and loaded.train == result.train
    assert loaded.data == cfg.data  # everything else as the user wrote it
    assert loaded.evaluation.gate_metric == "recall@50"


def test_the_trial_table_and_plot(tuned: tuple[NightlyConfig, TuneResult]) -> None:
    _, result = tuned
    table = render_trials(result)
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(result.trials)  # one row per trial (the header dropped)
    assert "0 (base)" in table and "✓" in table
    assert f"{len(result.trials)} trials in" in table
    assert "| tuned |" in render_test_table(result)
    assert trials_plot(result).startswith(b"\x89PNG")


def test_the_search_is_reproducible_by_seed(tmp_path: Path) -> None:
    cfg = _config(tmp_path, epochs=1)

    def params(seed: int) -> list[dict[str, object]]:
        res = run_tuning(cfg, str(tmp_path), TuneBudget(trials=5), seed=seed, evaluate=False)
        return [t.params for t in res.trials]

    first, again, other = params(5), params(5), params(6)
    assert first == again

    # Trials 0-2 are enqueued, the same for every seed except what the space cannot
    # express: the config's patience 1 is not a choice, so the sampler draws it.
    def enqueued(trials: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in t.items() if k != "patience"} for t in trials[:3]]

    assert enqueued(first) == enqueued(other)
    assert first[3:] != other[3:]  # the sampled ones follow the seed


def test_a_time_budget_stops_starting_trials(tmp_path: Path) -> None:
    cfg = _config(tmp_path, epochs=1)
    result = run_tuning(cfg, str(tmp_path), TuneBudget(trials=None, minutes=1e-4), evaluate=False)
    # Optuna checks the clock between trials: the first one runs, no second starts.
    assert len(result.trials) == 1 and result.best_number == 0
    assert result.rankers == {}


def test_a_failing_trial_is_recorded_and_the_search_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fit = tuning.fit
    calls = {"n": 0}

    def flaky_fit(prep, tower: TowerConfig, train, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("loss is NaN")
        return real_fit(prep, tower, train, **kw)

    monkeypatch.setattr(tuning, "fit", flaky_fit)
    cfg = _config(tmp_path, epochs=1)
    result = run_tuning(cfg, str(tmp_path), TuneBudget(trials=3), evaluate=False)
    states = [t.state for t in result.trials]
    assert states == ["complete", "fail", "complete"]
    assert result.trials[1].error == "RuntimeError: loss is NaN"
    assert result.best_number in (0, 2)
    assert "1 failed" in render_trials(result)


def test_budgets_that_cannot_stop_are_refused() -> None:
    with pytest.raises(ValueError, match="trials or minutes"):
        TuneBudget(trials=None, minutes=None)
    with pytest.raises(ValueError, match="at least 1"):
        TuneBudget(trials=0)
    with pytest.raises(ValueError, match="positive"):
        TuneBudget(trials=None, minutes=0)


def test_the_tune_command_writes_its_files(tmp_path: Path) -> None:
    from cli.app import app

    out = tmp_path / "out"
    args = ["tune", "--scale", "tiny", "--trials", "2", "--epochs", "1", "--threads", "1"]
    args += ["--root", str(tmp_path / "root"), "--out", str(out), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert len(payload["trials"]) == 2 and "tuned" in payload["rankers"]
    assert {p.name for p in out.iterdir()} == {
        "tuned.yaml",
        "trials.md",
        "trials.json",
        "trials.png",
        "test.md",
    }
    tuned = yaml.safe_load((out / "tuned.yaml").read_text())
    assert tuned["train"]["epochs"] == 1 and "tower" in tuned
    assert load_config(out / "tuned.yaml", {}).train.early_stopping_patience is not None


def test_evaluate_takes_a_recipe_from_another_config(tmp_path: Path) -> None:
    from cli.app import app

    # Only the recipe's tower and train sections are read (its data section is ignored).
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data: {scale: tiny}\ntower: {embedding_dim: 16}\ntrain: {epochs: 2, temperature: 0.2}\n"
    )
    args = ["evaluate", "--recipe", str(recipe), "--scale", "tiny", "--threads", "1"]
    res = CliRunner().invoke(app, [*args, "--root", str(tmp_path / "root"), "--json"])
    assert res.exit_code == 0, res.output
    (run,) = json.loads(res.stdout)["runs"]
    assert run["epochs"] == 2  # the recipe's, not the default 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 0}\n")
    res = CliRunner().invoke(app, ["evaluate", "--recipe", str(bad), "--json"])
    assert res.exit_code == 2 and "train.epochs" in res.stdout


def test_the_tune_command_searches_the_linear_towers_rank_and_penalties(tmp_path: Path) -> None:
    from cli.app import app
    from core.ladder import LINEAR, LINEAR_TRAIN

    out = tmp_path / "out"
    args = ["tune", "--scale", "tiny", "--kind", "linear", "--trials", "4", "--threads", "1"]
    res = CliRunner().invoke(app, [*args, "--root", str(tmp_path / "root"), "--out", str(out),
                                   "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    trials = json.loads(res.stdout)["trials"]
    assert len(trials) == 4
    # Trial 0 is the ablation's linear rung; the others draw only the linear space.
    rung = {"rank": LINEAR["embedding_dim"], **LINEAR_TRAIN}
    assert trials[0]["params"] == rung
    assert all(set(t["params"]) == {"rank", "linear_l2", "linear_dropout"} for t in trials)
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 4
    tuned = load_config(out / "tuned.yaml", {})
    assert tuned.tower.kind == "linear" and tuned.tower.history_len == LINEAR["history_len"]
    head = (out / "trials.md").read_text().splitlines()[0]
    assert "| rank | linear_l2 | linear_dropout |" in head
    bad = CliRunner().invoke(app, ["tune", "--kind", "deep", "--scale", "tiny", "--json"])
    assert bad.exit_code == 2 and "--kind" in bad.output


def test_the_tune_command_searches_a_hybrids_linear_part_and_keeps_its_mlp(
    tmp_path: Path,
) -> None:
    from cli.app import app
    from core.ladder import HYBRID, LINEAR_TRAIN

    out = tmp_path / "out"
    args = ["tune", "--scale", "tiny", "--kind", "hybrid", "--trials", "3", "--threads", "1",
            "--epochs", "1"]  # fmt: skip
    res = CliRunner().invoke(app, [*args, "--root", str(tmp_path / "root"), "--out", str(out),
                                   "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    trials = json.loads(res.stdout)["trials"]
    # Trial 0 is the ablation's hybrid rung; every trial draws only its linear part.
    assert trials[0]["params"] == {"rank": HYBRID["linear_dim"], **LINEAR_TRAIN}
    assert all(set(t["params"]) == {"rank", "linear_l2", "linear_dropout"} for t in trials)
    assert all(t["state"] == "complete" and t["epochs"] == 2 for t in trials)  # MLP + blend
    tuned = load_config(out / "tuned.yaml", {})
    assert tuned.tower.kind == "hybrid" and tuned.tower.embedding_dim == HYBRID["embedding_dim"]
    assert tuned.tower.history_len == HYBRID["history_len"] and tuned.tower.item_bias


def test_kind_overrides_switch_recipes_without_carrying_the_other_kinds_bag() -> None:
    from cli.tune import _kind_overrides
    from core.ladder import HYBRID, HYBRID_TRAIN, LINEAR, LINEAR_TRAIN

    linear_cfg = {"tower": {"kind": "linear", "history_len": 5000, "embedding_dim": 512}}
    # A linear config tuned as an MLP leaves its 5,000-item bag behind: no history feature.
    assert _kind_overrides("mlp", linear_cfg) == {"tower.kind": "mlp", "tower.history_len": 0}
    # An MLP config keeps its own history feature.
    assert _kind_overrides("mlp", {"tower": {"history_len": 20}}) == {"tower.kind": "mlp"}
    # 'linear' fills what the config does not set from the ladder's rung.
    out = _kind_overrides("linear", {"tower": {"embedding_dim": 256}, "train": {}})
    assert "tower.embedding_dim" not in out and out["tower.kind"] == "linear"
    assert out["tower.history_len"] == LINEAR["history_len"]
    assert {f"train.{k}": v for k, v in LINEAR_TRAIN.items()}.items() <= out.items()
    assert _kind_overrides(None, linear_cfg) == {}
    # 'hybrid' takes the hybrid rung (the MLP part's widths and the linear part's rank);
    # an MLP tune of a hybrid config drops its bag too.
    hybrid = _kind_overrides("hybrid", {})
    assert hybrid["tower.kind"] == "hybrid" and hybrid["tower.linear_dim"] == HYBRID["linear_dim"]
    assert hybrid["tower.embedding_dim"] == HYBRID["embedding_dim"]
    assert {f"train.{k}": v for k, v in HYBRID_TRAIN.items()}.items() <= hybrid.items()
    assert _kind_overrides("mlp", {"tower": {"kind": "hybrid", "history_len": 5000}}) == {
        "tower.kind": "mlp",
        "tower.history_len": 0,
    }
