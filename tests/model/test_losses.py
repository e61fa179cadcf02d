"""Losses against values worked out by hand: in-batch softmax, accidental hits, logQ
correction, sampling probabilities and pointwise BCE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.losses import bce_loss, in_batch_softmax_loss, log_sampling_probability

f64 = torch.float64
LN = math.log


def _as_score_matrix(scores: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Users = identity rows and items = columns of ``scores``, so user_b . item_j = s[b][j]."""
    s = torch.tensor(scores, dtype=f64)
    return torch.eye(len(s), dtype=f64), s.T.contiguous()


def test_in_batch_softmax_matches_hand_value_2x2() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=f64)
    items = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=f64)
    # cosines: [[1.0, 0.6], [0.0, 0.8]]; / tau=0.5 -> logits [[2.0, 1.2], [0.0, 1.6]]
    # row 0 (positive col 0): -2.0 + log(e^2.0 + e^1.2) = log(1 + e^-0.8)
    # row 1 (positive col 1): -1.6 + log(e^0.0 + e^1.6) = log(1 + e^-1.6)
    expected = (math.log1p(math.exp(-0.8)) + math.log1p(math.exp(-1.6))) / 2
    loss = in_batch_softmax_loss(users, items, torch.tensor([3, 8]), temperature=0.5)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_accidental_hit_column_is_removed_per_row() -> None:
    # Batch positions 0 and 2 hold the same item row (5); position 1 holds item 7.
    # tau = 1, scores chosen as logs so each softmax is a ratio of integers:
    #   s = [[ln 3, ln 1, ln 5],
    #        [ln 2, ln 2, ln 4],
    #        [ln 6, ln 2, ln 2]]
    # row 0: positive col 0, col 2 is the same item -> masked: ln((3 + 1) / 3) = ln(4/3)
    # row 1: positive col 1, item 7 appears once -> nothing masked: ln((2 + 2 + 4) / 2) = ln 4
    # row 2: positive col 2, col 0 is the same item -> masked: ln((2 + 2) / 2) = ln 2
    users, items = _as_score_matrix(
        [[LN(3), LN(1), LN(5)], [LN(2), LN(2), LN(4)], [LN(6), LN(2), LN(2)]]
    )
    expected = (LN(4 / 3) + LN(4) + LN(2)) / 3
    loss = in_batch_softmax_loss(users, items, torch.tensor([5, 7, 5]), temperature=1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # Unmasked it would be (ln 3 + ln 4 + ln 5) / 3: the mask changes the value.
    distinct = in_batch_softmax_loss(users, items, torch.tensor([5, 7, 9]), temperature=1.0)
    assert distinct.item() == pytest.approx((LN(3) + LN(4) + LN(5)) / 3, rel=1e-12)


def test_masked_logits_give_finite_gradients() -> None:
    users, items = _as_score_matrix([[0.3, 0.1, 0.9], [0.2, 0.5, 0.4], [0.7, 0.2, 0.1]])
    users.requires_grad_(True)
    items.requires_grad_(True)
    loss = in_batch_softmax_loss(users, items, torch.tensor([5, 5, 5]), temperature=0.1)
    # Every negative is the positive's own item: each row is a softmax over one logit.
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert users.grad is not None and items.grad is not None
    assert torch.isfinite(users.grad).all() and torch.isfinite(items.grad).all()


def test_logq_correction_matches_hand_value() -> None:
    # tau = 1, s = [[ln 2, ln 3], [ln 1, ln 4]], q = [1/2, 1/4]; logits = s - log q:
    #   row 0: [ln 2 + ln 2, ln 3 + ln 4] = [ln 4, ln 12] -> -ln 4 + ln 16 = ln 4
    #   row 1: [ln 1 + ln 2, ln 4 + ln 4] = [ln 2, ln 16] -> -ln 16 + ln 18 = ln(9/8)
    users, items = _as_score_matrix([[LN(2), LN(3)], [LN(1), LN(4)]])
    log_q = torch.tensor([LN(1 / 2), LN(1 / 4)], dtype=f64)
    loss = in_batch_softmax_loss(users, items, torch.tensor([1, 2]), 1.0, log_q=log_q)
    assert loss.item() == pytest.approx((LN(4) + LN(9 / 8)) / 2, rel=1e-12)
    # Temperature divides the score before the correction: s / 0.5 - log q.
    #   row 0: [2 ln 2 + ln 2, 2 ln 3 + ln 4] = [ln 8, ln 36]  -> ln(44 / 8)
    #   row 1: [0 + ln 2, 2 ln 4 + ln 4] = [ln 2, ln 64]      -> ln(66 / 64)
    loss_half = in_batch_softmax_loss(users, items, torch.tensor([1, 2]), 0.5, log_q=log_q)
    assert loss_half.item() == pytest.approx((LN(44 / 8) + LN(66 / 64)) / 2, rel=1e-12)


def test_log_sampling_probability_sums_to_one_over_seen_rows() -> None:
    counts = torch.tensor([0, 3, 1, 0, 4])
    log_q = log_sampling_probability(counts)
    assert log_q.dtype == torch.float32 and log_q.shape == (5,)
    assert torch.isfinite(log_q).all()
    q = log_q.double().exp()
    seen = counts > 0
    assert q[seen].sum().item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(q, torch.tensor([1, 3, 1, 1, 4], dtype=f64) / 8, rtol=1e-6, atol=0)


def test_log_sampling_probability_of_no_counts_is_finite() -> None:
    log_q = log_sampling_probability(torch.zeros(4, dtype=torch.int64))
    assert torch.isfinite(log_q).all()


def test_bce_loss_equals_reference_on_hand_logits() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    items = torch.tensor([[0.6, 0.8], [0.0, 1.0], [-0.6, -0.8]])
    labels = torch.tensor([1.0, 0.0, 1.0])
    bias = torch.tensor(-0.5, requires_grad=True)
    # cosines 0.6, 1.0, -1.0; / tau=0.2 -> 3, 5, -5; + bias -> 2.5, 4.5, -5.5
    logits = torch.tensor([2.5, 4.5, -5.5])
    expected = F.binary_cross_entropy_with_logits(logits, labels)
    loss = bce_loss(users, items, labels, temperature=0.2, bias=bias)
    torch.testing.assert_close(loss, expected)
    # By hand: softplus(-2.5), softplus(4.5), softplus(5.5), averaged.
    by_hand = math.log1p(math.exp(-2.5)) + math.log1p(math.exp(4.5)) + math.log1p(math.exp(5.5))
    assert loss.item() == pytest.approx(by_hand / 3, rel=1e-6)
    loss.backward()
    assert bias.grad is not None and bias.grad.item() != 0.0
