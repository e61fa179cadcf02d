"""Information ceilings (bench.ceiling) on the tiny synthetic world: the learned ceilings
are far above popularity yet not above the oracle, the chosen epoch is a real one, the run
is deterministic, the command line prints the table, and real data is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ceiling import (
    LEARNED_ITEMS,
    LEARNED_USERS,
    ORACLE,
    ORACLE_NO_POP,
    ORACLE_TRAIN_POP,
    POPULARITY,
    CeilingResult,
    main,
    render_table,
    run_ceiling,
)
from bench.movielens_like import MovieLensLikeConfig, import_config, write_movielens_like
from core.config import DataConfig, NightlyConfig

TINY = NightlyConfig(data=DataConfig(scale="tiny"))
EPOCHS = 4  # enough to clear the margins below (~5 s on 2 cores)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def result(root: Path) -> CeilingResult:
    return run_ceiling(TINY, str(root), epochs=EPOCHS, threads=2)


@pytest.fixture(scope="module")
def one_epoch(root: Path) -> CeilingResult:
    return run_ceiling(TINY, str(root), epochs=1, threads=2)


def test_oracle_tops_and_learned_ceilings_sit_between_popularity_and_oracle(
    result: CeilingResult,
) -> None:
    r50 = {name: m["recall@50"] for name, m in result.rankers.items()}
    assert set(r50) == {
        ORACLE,
        ORACLE_TRAIN_POP,
        ORACLE_NO_POP,
        LEARNED_USERS,
        LEARNED_ITEMS,
        POPULARITY,
    }
    assert result.of_oracle(ORACLE) == 1.0
    # On tiny after 4 epochs: oracle 0.83, learned ceilings 0.69 / 0.73, popularity 0.28.
    for name in (LEARNED_USERS, LEARNED_ITEMS):
        assert r50[name] > 2 * r50[POPULARITY], name
        assert r50[name] <= 1.05 * r50[ORACLE], name
    # The popularity term is part of the truth: dropping it costs recall at the top.
    top = {name: m["recall@10"] for name, m in result.rankers.items()}
    assert top[ORACLE_TRAIN_POP] > 1.2 * top[ORACLE_NO_POP]
    assert result.n_users > 300 and result.n_items == 600


def test_fits_report_a_validation_chosen_epoch(result: CeilingResult) -> None:
    assert [f.name for f in result.fits] == [LEARNED_USERS, LEARNED_ITEMS]
    for fit in result.fits:
        assert fit.epochs == EPOCHS and 1 <= fit.best_epoch <= EPOCHS
        assert 0.3 < fit.val_metric <= 1.0  # popularity reaches 0.28 on test


def test_table_lists_every_ranker_with_its_share_of_the_oracle(result: CeilingResult) -> None:
    table = render_table(result)
    for name in result.rankers:
        assert f"| {name} |" in table
    assert "| 100.0% |" in table
    assert f"{result.of_oracle(LEARNED_USERS):.1%}" in table
    assert result.to_json()["of_oracle"][ORACLE] == 1.0


def test_deterministic(root: Path, one_epoch: CeilingResult) -> None:
    again = run_ceiling(TINY, str(root), epochs=1, threads=2)
    assert again.rankers == one_epoch.rankers
    assert [f.val_metric for f in again.fits] == [f.val_metric for f in one_epoch.fits]


def test_real_data_and_zero_epochs_are_refused(tmp_path: Path, root: Path) -> None:
    files = tmp_path / "ml"
    write_movielens_like(files, MovieLensLikeConfig(n_users=60, n_items=50, seed=3))
    real = NightlyConfig.model_validate(
        {"data": {"source": "import", "importing": import_config(files)}}
    )
    with pytest.raises(ValueError, match="no ground truth"):
        run_ceiling(real, str(tmp_path / "store"), epochs=1)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        run_ceiling(TINY, str(root), epochs=0)


def test_command_line_prints_and_writes_the_table(
    root: Path, one_epoch: CeilingResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ceiling.md"
    args = ["--scale", "tiny", "--root", str(root), "--epochs", "1", "--threads", "2"]
    assert main([*args, "--out", str(out)]) == 0
    table = render_table(one_epoch)  # same world, seed and epochs: the same table
    assert out.read_text(encoding="utf-8") == table + "\n"
    assert capsys.readouterr().out == table + "\n"
