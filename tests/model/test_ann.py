"""ANN choice and tuning: recall is measured against exact search, as faiss's tests do."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from model.ann import (
    default_factory,
    exact_topk,
    measure_latency,
    recall_against,
    refine_factors,
    search_knob,
    tune_index,
)
from model.index import build_index, search


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((32, d)).astype(np.float32)
    x = centres[rng.integers(0, 32, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = _clustered(6000, 16, 0)
    ids = np.random.default_rng(1).choice(10**9, 6000, replace=False).astype(np.int64)
    queries = _clustered(300, 16, 2)
    return vectors, ids, queries


def test_default_factory_by_catalogue_size() -> None:
    assert default_factory(600, 64) == "Flat"
    assert default_factory(50_000, 64) == "Flat"
    assert default_factory(1_000_000, 64) == "IVF4000,Flat"
    assert default_factory(10_000_000, 64).startswith("IVF12649,PQ32")


def test_recall_against_hand_case() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    approx = np.array([[4, 9, 1, 7], [6, 5, -1, -1]])
    # (2 of 4) + (2 of 2) hits over 6 true neighbours.
    assert recall_against(approx, exact) == pytest.approx(4 / 6)


def test_flat_index_is_exact(world: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ids, queries = world
    index = build_index(vectors, ids, "Flat")
    assert search_knob(index) is None
    result = tune_index(index, queries, exact_topk(vectors, ids, queries, 50), 50, 0.95)
    assert result.knob is None and result.recall == 1.0 and result.met


def test_ivf_tuning_picks_the_cheapest_nprobe_meeting_the_target(
    world: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    vectors, ids, queries = world
    index = build_index(vectors, ids, "IVF64,Flat")
    exact = exact_topk(vectors, ids, queries, 50)
    result = tune_index(index, queries, exact, 50, 0.95)
    assert result.knob == "nprobe" and result.met and result.recall >= 0.95
    assert faiss.extract_index_ivf(index).nprobe == result.value
    # Every cheaper setting tried missed the target: the choice is the cheapest.
    assert all(t["recall"] < 0.95 for t in result.trials[:-1])
    assert result.trials[-1]["nprobe"] == result.value
    if result.value and result.value > 1:
        faiss.extract_index_ivf(index).nprobe = result.trials[0]["nprobe"]
        assert recall_against(search(index, queries, 50)[1], exact) < 0.95


def test_unreachable_target_is_reported_not_met(
    world: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    vectors, ids, queries = world
    # 2-byte product codes cannot separate 50 neighbours among 6000 vectors.
    index = build_index(vectors, ids, "IVF16,PQ2")
    result = tune_index(index, queries, exact_topk(vectors, ids, queries, 50), 50, 0.99)
    assert not result.met and result.recall < 0.99
    # The most accurate setting is kept, the cheapest of equals (the codes' plateau).
    best = max(t["recall"] for t in result.trials)
    assert result.recall == best
    assert result.value == min(t["nprobe"] for t in result.trials if t["recall"] == best)


def test_hnsw_knob_is_ef_search_at_least_k(
    world: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    vectors, ids, queries = world
    index = build_index(vectors, ids, "HNSW16")
    result = tune_index(index, queries, exact_topk(vectors, ids, queries, 100), 100, 0.9)
    assert result.knob == "efSearch" and result.value is not None and result.value >= 100
    assert result.met


def test_a_refinement_stage_gets_its_k_factor_tuned_too(
    world: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """IVF-PQ + exact re-ranking (the 'auto' factory above 5M items): 4-byte codes alone
    plateau far below the target at any nprobe; re-ranking more candidates reaches it.
    The settings survive the index file (what the service and item events load)."""
    vectors, ids, queries = world
    index = build_index(vectors, ids, "IVF32,PQ4,RFlat")
    assert refine_factors(index) == [1, 2, 4, 8, 16]
    exact = exact_topk(vectors, ids, queries, 50)
    result = tune_index(index, queries, exact, 50, 0.95)
    assert result.met and result.recall >= 0.95
    plain = [t for t in result.trials if t["k_factor_rf"] == 1]
    assert len(plain) == len(search_knob(index)[1])  # type: ignore[index]
    assert max(t["recall"] for t in plain) < 0.95  # nprobe alone cannot get there
    assert result.params["k_factor_rf"] > 1 and result.params["nprobe"] == result.value
    # The smallest nprobe that meets the target at any factor, then the smallest factor.
    met = [t for t in result.trials if t["recall"] >= 0.95]
    assert result.value == min(t["nprobe"] for t in met)
    faiss.write_index(index, str(tmp_path / "i.faiss"))
    back = faiss.read_index(str(tmp_path / "i.faiss"))
    assert recall_against(search(back, queries, 50)[1], exact) == pytest.approx(result.recall)
    assert refine_factors(build_index(vectors, ids, "IVF32,Flat")) == []


def test_latency_is_measured_on_one_faiss_thread_as_served() -> None:
    """Single queries are timed as the API runs them (one Faiss thread), and the
    process's thread count is restored afterwards, also when a search fails."""
    seen: list[int] = []

    class Recorder:
        def search(self, q: np.ndarray, k: int) -> None:
            seen.append(faiss.omp_get_max_threads())

    class Failing:
        def search(self, q: np.ndarray, k: int) -> None:
            raise RuntimeError("search failed")

    queries = np.zeros((5, 4), np.float32)
    original = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        p50, p99 = measure_latency(Recorder(), queries, 3)  # type: ignore[arg-type]
        assert seen == [1] * 5 and 0 <= p50 <= p99
        assert faiss.omp_get_max_threads() == 2
        with pytest.raises(RuntimeError, match="search failed"):
            measure_latency(Failing(), queries, 3)  # type: ignore[arg-type]
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(original)
