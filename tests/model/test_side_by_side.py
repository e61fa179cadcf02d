"""Full ranking side by side on shared cores gives the lists it gives inline, and the
governor sees one loop: ticks from the batch threads only, none from a nested loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

import model.fast_rank as fast_rank
from model.fast_rank import VectorScores, vector_topk
from model.metrics import full_ranking_topk
from model.sets import CsrSets
from model.side_by_side import run_side_by_side, spread
from model.threadgov import ThreadGovernor, batch_workers, install
from tests.model.conftest import Recording


def _world(seed: int) -> tuple[VectorScores, CsrSets, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 400
    # Small integer vectors: every score is exact in float32 whatever the block, and
    # many tie, also at the top-k boundary (the dense re-ranking of unsettled rows).
    users = rng.integers(-2, 3, (n_users, 4)).astype(np.float32)
    items = rng.integers(-2, 3, (n_items, 4)).astype(np.float32)
    pairs = [(u, i) for u in range(n_users) for i in rng.choice(n_items, 30, replace=False)]
    u, i = np.array(pairs).T
    exclude = CsrSets.from_pairs(u.astype(np.int64), i.astype(np.int64), n_users)
    return VectorScores(users, items), exclude, np.arange(n_users, dtype=np.int64)


def test_dense_ranking_side_by_side_equals_inline(
    governor: Callable[[int, int], Recording],
) -> None:
    scores, exclude, rows = _world(0)
    install(None)
    expected = full_ranking_topk(lambda r: scores(r), rows, 400, exclude, 25, block_users=8)
    gov = governor(2, 1)
    seen: list[int] = []

    def score(r: np.ndarray) -> np.ndarray:
        seen.append(threading.get_ident())
        time.sleep(0.003)  # long enough for the second thread to start and take a block
        return scores(r)

    got = full_ranking_topk(score, rows, 400, exclude, 25, block_users=8)
    np.testing.assert_array_equal(got, expected)
    # Blocks of 8 // 2 = 4 users on two threads: the same memory as one block of 8.
    assert len(seen) == 15 and len(set(seen)) == 2 and threading.get_ident() not in seen
    assert sum(u for u, _ in gov.ticks) == len(rows)


def test_vector_ranking_side_by_side_equals_inline_without_nested_ticks(
    governor: Callable[[int, int], Recording], monkeypatch: pytest.MonkeyPatch
) -> None:
    scores, exclude, rows = _world(1)
    monkeypatch.setattr(fast_rank, "_VECTOR_BLOCK", 10)  # 6 blocks, side by side of 5
    install(None)
    expected = vector_topk(scores, rows, 400, exclude, 25)
    gov = governor(2, 1)
    got = vector_topk(scores, rows, 400, exclude, 25)
    np.testing.assert_array_equal(got, expected)
    # Ties at the boundary send rows to the dense path, a loop nested in a batch: it ran
    # inline on the batch's thread and did not tick the governor on its own.
    assert sum(u for u, _ in gov.ticks) == len(rows)
    assert threading.get_ident() not in {t for _, t in gov.ticks}


def test_a_batch_thread_runs_nested_loops_inline(
    governor: Callable[[int, int], Recording],
) -> None:
    governor(2, 1)
    assert spread() == 2
    inner: list[int] = []
    run_side_by_side(lambda lo, hi: inner.append(spread()), 0, 4, 1, lambda u: None)
    assert inner == [1, 1, 1, 1]


def test_a_probe_of_more_threads_runs_fewer_batches_at_once() -> None:
    """At one thread of two, batches run two at once; while the governor tries two threads,
    one at a time (each at two threads), so the probe measures what it would adopt."""
    now = [0.0]
    applied: list[tuple[int, int]] = []
    gov = ThreadGovernor(
        2,
        lambda n: applied.append((n, -1)),
        clock=lambda: now[0],
        window_s=0.0,
        window_steps=1,
        min_interval_s=0.0,
    )
    install(gov)
    try:
        gov.current = gov.applied = 1
        tick = gov.start()
        plans = []
        for _ in range(12):
            plans.append((gov.applied, batch_workers()))
            now[0] += 0.01
            tick(100)
        assert (2, 1) in plans and (1, 2) in plans
        assert all(workers == 2 // count for count, workers in plans)
    finally:
        install(None)
