"""Losses against values worked out by hand: in-batch softmax, accidental hits, logQ
correction (and a world where its sign visibly matters), mixed and hard negatives,
sampling probabilities and pointwise BCE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.losses import (
    bce_loss,
    full_softmax_loss,
    in_batch_softmax_loss,
    log_expected_count,
    log_sampling_probability,
    mixed_softmax_loss,
)

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


def test_mixed_loss_without_extras_equals_in_batch_with_logq() -> None:
    # log(B q_j + 0) = log q_j + log B: the constant shift leaves the softmax unchanged.
    gen = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(6, 4, generator=gen), dim=1)
    v = torch.nn.functional.normalize(torch.randn(6, 4, generator=gen), dim=1)
    rows = torch.tensor([3, 1, 3, 2, 5, 4])
    log_q = torch.log(torch.tensor([0.3, 0.1, 0.3, 0.2, 0.05, 0.05]))
    expected = in_batch_softmax_loss(u, v, rows, 0.2, log_q)
    got = mixed_softmax_loss(u, v, rows, 0.2, log_expected_count(log_q, 6, 0, 100))
    assert torch.allclose(got, expected, atol=1e-6)


def test_log_expected_count_mixes_both_sources() -> None:
    log_q = torch.log(torch.tensor([0.5, 0.01]))
    got = log_expected_count(log_q, batch_size=100, n_uniform=50, n_items=1000).exp()
    # 100 unigram draws + 50 uniform draws over 1000 items.
    assert torch.allclose(got, torch.tensor([100 * 0.5 + 0.05, 100 * 0.01 + 0.05]), rtol=1e-5)


def test_extra_negative_equal_to_the_positive_is_masked() -> None:
    u = torch.eye(2)
    v = torch.eye(2)
    rows = torch.tensor([7, 8])
    extra = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Extra item 7 is example 0's own positive: it must not count as its negative, but it
    # is a genuine negative for example 1; extra item 9 is a negative for both.
    loss = mixed_softmax_loss(u, v, rows, 1.0, None, extra, torch.tensor([7, 9]))
    row0 = torch.log_softmax(torch.tensor([1.0, 0.0, 0.0]), 0)[0]  # item 7 column dropped
    row1 = torch.log_softmax(torch.tensor([0.0, 1.0, 0.0, 1.0]), 0)[1]
    assert torch.allclose(loss, -(row0 + row1) / 2, atol=1e-6)


def test_hard_negatives_equal_to_the_positive_are_masked_per_example() -> None:
    u = torch.eye(2)
    v = torch.eye(2)
    rows = torch.tensor([7, 8])
    hard_vecs = torch.stack([torch.eye(2), torch.eye(2)])  # (B=2, H=2, D=2)
    hard_rows = torch.tensor([[7, 9], [9, 9]])
    loss = mixed_softmax_loss(u, v, rows, 1.0, hard_vecs=hard_vecs, hard_rows=hard_rows)
    row0 = torch.log_softmax(torch.tensor([1.0, 0.0, 0.0]), 0)[0]  # hard item 7 masked
    row1 = torch.log_softmax(torch.tensor([0.0, 1.0, 0.0, 1.0]), 0)[1]
    assert torch.allclose(loss, -(row0 + row1) / 2, atol=1e-6)


def _fit_free_embeddings(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int, sign: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Free user / item vectors trained with in-batch softmax; ``sign`` scales the logQ
    term (+1 = correct subtraction, 0 = none, -1 = the wrong sign)."""
    gen = torch.Generator().manual_seed(0)
    uv = torch.nn.Parameter(torch.randn(n_users, 8, generator=gen) * 0.1)
    iv = torch.nn.Parameter(torch.randn(n_items, 8, generator=gen) * 0.1)
    log_q = log_sampling_probability(torch.bincount(items, minlength=n_items))
    opt = torch.optim.Adam([uv, iv], lr=0.05)
    for _ in range(15):
        perm = torch.randperm(len(users), generator=gen)
        for lo in range(0, len(users), 256):
            idx = perm[lo : lo + 256]
            u, i = users[idx], items[idx]
            loss = in_batch_softmax_loss(uv[u], iv[i], i, 1.0, sign * log_q[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return uv.detach(), iv.detach()


def test_logq_sign_matters_on_a_popularity_skewed_world() -> None:
    """Users pick from softmax(taste + log popularity). The correction's job is to keep
    popularity in the learned scores although popular items are over-sampled as in-batch
    negatives: the right sign ranks each user's true top items best, no correction is
    worse, and the wrong sign (adding log q) is worst."""
    rng = np.random.default_rng(0)
    n_users, n_items, per_user = 60, 120, 120
    taste = rng.standard_normal((n_users, 4)) @ rng.standard_normal((4, n_items))
    log_pop = -1.5 * np.log(np.arange(1, n_items + 1))
    logits = taste + log_pop
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    items = np.concatenate([rng.choice(n_items, per_user, p=p[u]) for u in range(n_users)])
    users = np.repeat(np.arange(n_users), per_user)
    true_top = np.argsort(-logits, axis=1)[:, :10]

    def overlap(sign: float) -> float:
        uv, iv = _fit_free_embeddings(
            torch.from_numpy(users), torch.from_numpy(items), n_users, n_items, sign
        )
        top = torch.topk(uv @ iv.T, 10, dim=1).indices.numpy()
        return float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, true_top, strict=True)])
        )

    right, none, wrong = overlap(1.0), overlap(0.0), overlap(-1.0)
    # Measured: 0.82 / 0.32 / 0.09.
    assert right > none + 0.2 and none > wrong + 0.1, (right, none, wrong)


def test_full_softmax_is_the_cross_entropy_over_every_catalogue_item() -> None:
    gen = torch.Generator().manual_seed(0)
    users, catalogue = torch.randn(3, 4, generator=gen), torch.randn(5, 4, generator=gen)
    rows = torch.tensor([1, 5, 3])  # vocabulary rows: catalogue row r is item row r + 1
    loss = full_softmax_loss(users, catalogue, rows, 0.5)
    logits = (users @ catalogue.T / 0.5).double()
    by_hand = -np.mean([float(torch.log_softmax(logits[b], 0)[r - 1]) for b, r in enumerate(rows)])
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)
    # Sampled softmax over the whole catalogue as "in-batch" candidates is the same number.
    assert float(loss) == pytest.approx(
        float(F.cross_entropy(users @ catalogue.T / 0.5, rows - 1)), rel=1e-6
    )


def test_mixed_loss_masks_every_repeated_item_like_the_dense_reference() -> None:
    """The sort-based accidental-hit mask and the fused GEMM give the B x B reference's
    loss and gradients on a batch full of repeated items (groups of 2..5)."""
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(1, 40, (256,), generator=gen)
    u = torch.nn.functional.normalize(torch.randn(256, 8, generator=gen), dim=1)
    v = torch.nn.functional.normalize(torch.randn(256, 8, generator=gen), dim=1)
    log_q = torch.randn(256, generator=gen)
    grads = []
    for fn in (in_batch_softmax_loss, mixed_softmax_loss):
        uu, vv = u.clone().requires_grad_(), v.clone().requires_grad_()
        loss = fn(uu, vv, rows, 0.1, log_q)
        loss.backward()
        grads.append((loss.detach(), uu.grad, vv.grad))
    for expected, got in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # Without repeats and without a correction the same holds.
    distinct = torch.randperm(300, generator=gen)[:256] + 1
    torch.testing.assert_close(
        mixed_softmax_loss(u, v, distinct, 0.1), in_batch_softmax_loss(u, v, distinct, 0.1)
    )
