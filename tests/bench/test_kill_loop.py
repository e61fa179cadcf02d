"""The kill loop (bench/kill_loop.py) on a fresh tiny store: SIGKILLed items events (and,
in the slow test, nightly runs) leave CURRENT valid, every acknowledged item is served
exactly once after the next successful run, and nothing a dead run left survives it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.kill_checks import check_store, leftovers, served
from bench.kill_loop import ITEMS_PER_EVENT, KillLoopResult, render, run_kill_loop
from storage import Layout


def _assert_invariants(result: KillLoopResult, kills: int) -> None:
    assert not result.violations, result.violations
    assert sum(result.kills.values()) == kills
    assert result.store_checks >= kills  # after every kill and every successful run
    assert result.lost == 0 and result.duplicated == 0 and result.left_after_run == 0
    # Every event was acknowledged once (one killed before its ACK was redelivered).
    assert len(result.acked) == ITEMS_PER_EVENT * (result.acked_events - result.updates) > 0
    layout = Layout(result.root)
    assert check_store(layout) == []
    final = served(layout, result.acked)
    assert final.served == len(result.acked) and not final.lost and not final.duplicated
    assert not final.stale
    assert leftovers(layout) == []
    table = render(result)
    assert f"| **all** | | **{kills}** |" in table
    assert "| acknowledged items lost | 0 |" in table


def test_items_events_killed_at_random_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    result = run_kill_loop(tmp_path / "store", kills=5, seed=7, items_share=1.0, check_every=100)
    _assert_invariants(result, 5)
    assert {kind for kind, _ in result.kills} == {"items"}
    assert result.finished["items"] >= 2  # the timing run and the final one
    assert result.run_checks == sum(result.finished.values())


def test_delta_publishes_and_compactions_killed_at_random_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    result = run_kill_loop(
        tmp_path / "store", kills=8, seed=3, items_share=0.5, compact_share=0.5, check_every=100
    )
    _assert_invariants(result, 8)
    assert {kind for kind, _ in result.kills} == {"items", "compact"}
    assert result.finished["compact"] >= 1  # the timing run: it folded a chain


def test_updates_on_hnsw_killed_at_random_keep_one_current_vector_each(tmp_path: Path) -> None:
    """HNSW cannot replace a vector: updates go to the overlay, which deltas, the load
    path and compaction carry; kills at every step leave each item served once, its fresh
    vector the one its chain's embeddings give it."""
    result = run_kill_loop(
        tmp_path / "store", kills=8, seed=8, items_share=0.6, compact_share=0.4,
        check_every=100, update_share=0.7, factory="HNSW16",
    )  # fmt: skip
    _assert_invariants(result, 8)
    assert result.updates >= 1
    assert result.most_fresh > 0  # the updates went through the overlay


@pytest.mark.slow
def test_twenty_kills_over_items_events_and_nightly_runs(tmp_path: Path) -> None:
    result = run_kill_loop(tmp_path / "store", kills=20, seed=1, items_share=0.6, check_every=10)
    _assert_invariants(result, 20)
    assert {kind for kind, _ in result.kills} == {"items", "nightly"}
    assert result.left_by_kills > 0  # kills did leave staging behind, and it was removed
