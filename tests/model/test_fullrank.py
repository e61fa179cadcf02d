"""Evaluation in user shards (``model.fullrank``): merged parts give bit-for-bit the
metrics of one unsplit pass, and the unsplit pass is the composition of the per-metric
functions it replaced."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
import torch

from model.fullrank import evaluate_ranking, merge_parts, part_from_topk, rank_part
from model.metrics import full_ranking_topk, ranking_metrics
from model.ranking import beyond_accuracy_metrics
from model.sets import CsrSets

N_USERS, N_ITEMS, KS, BLOCK = 700, 300, (5, 20, 50), 64


def _world() -> tuple[torch.Tensor, CsrSets, CsrSets, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.normal(size=(N_USERS, N_ITEMS)).astype(np.float32))
    # Ties on purpose: popularity-like scores must break them the same way in every shard.
    scores[::7] = torch.floor(scores[::7] * 2)
    pairs_u = rng.integers(0, N_USERS, 6000)
    pairs_i = rng.integers(0, N_ITEMS, 6000)
    held = rng.random(6000) < 0.2
    relevant = CsrSets.from_pairs(pairs_u[held], pairs_i[held], N_USERS)
    exclude = CsrSets.from_pairs(pairs_u[~held], pairs_i[~held], N_USERS)
    popularity = rng.integers(0, 50, N_ITEMS).astype(np.float64)
    return scores, relevant, exclude, popularity


def test_parts_on_block_boundaries_merge_to_the_unsplit_figures_bit_for_bit() -> None:
    scores, relevant, exclude, pop = _world()

    def score(rows: npt.NDArray[np.int64]) -> torch.Tensor:
        return scores[torch.from_numpy(rows)].clone()

    whole = evaluate_ranking(score, np.arange(N_USERS), N_ITEMS, relevant, exclude, KS, BLOCK, pop)
    users = np.flatnonzero(relevant.lengths() > 0)
    bounds = [0, BLOCK * 2, BLOCK * 5, BLOCK * 6, len(users)]  # uneven, block-aligned shards
    parts = [
        rank_part(score, users[lo:hi], N_ITEMS, relevant, exclude, KS, BLOCK, pop)
        for lo, hi in itertools.pairwise(bounds)
    ]
    merged = merge_parts(parts, N_ITEMS, KS, pop)
    assert list(merged) == list(whole)  # same keys, same order
    assert merged == whole  # exact float equality, not approx
    assert sum(p.n_users for p in parts) == whole["n_users"] == len(users)


def test_the_unsplit_pass_equals_the_per_metric_functions() -> None:
    scores, relevant, exclude, pop = _world()
    users = np.flatnonzero(relevant.lengths() > 0)
    topk = full_ranking_topk(
        lambda r: scores[torch.from_numpy(r)].clone(), users, N_ITEMS, exclude, max(KS), BLOCK
    )
    expected = ranking_metrics(topk, users, relevant, KS)
    n_users = expected.pop("n_users")
    expected |= beyond_accuracy_metrics(topk, KS, N_ITEMS, pop)
    expected["n_users"] = n_users
    got = merge_parts([part_from_topk(topk, users, relevant, KS, pop)], N_ITEMS, KS, pop)
    assert got == expected


def test_coverage_is_the_union_of_the_parts() -> None:
    relevant = CsrSets.from_pairs(np.array([0, 1]), np.array([0, 0]), 2)
    # Each user's top-2 shows two items; together they show 3 of 4.
    a = part_from_topk(np.array([[0, 1]], np.int64), np.array([0]), relevant, (2,))
    b = part_from_topk(np.array([[1, 2]], np.int64), np.array([1]), relevant, (2,))
    assert merge_parts([a, b], 4, (2,))["coverage@2"] == pytest.approx(3 / 4)
    # A mean of the parts' coverage would say 2/4.


def test_parts_refuse_users_without_a_relevant_item_and_an_empty_merge() -> None:
    relevant = CsrSets.from_pairs(np.array([0]), np.array([0]), 2)
    with pytest.raises(ValueError, match="relevant item"):
        part_from_topk(np.array([[0, 1]], np.int64), np.array([1]), relevant, (2,))
    empty = part_from_topk(np.zeros((0, 2), np.int64), np.zeros(0, np.int64), relevant, (2,))
    assert empty.n_users == 0
    with pytest.raises(ValueError, match="nothing to evaluate"):
        merge_parts([empty], 2, (2,))
