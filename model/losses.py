"""Training objectives: in-batch sampled softmax with logQ correction, and pointwise BCE.

In-batch negatives are the other positives of the batch, so popular items appear as
negatives in proportion to their frequency; without correction the model learns to push
popular items down. Subtracting ``log q(item)`` from each logit (Yi et al., RecSys 2019)
makes the sampled softmax an unbiased estimate of the full one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bce_loss",
    "full_softmax_loss",
    "in_batch_softmax_loss",
    "log_expected_count",
    "log_sampling_probability",
    "mixed_softmax_loss",
]


def log_sampling_probability(item_counts: Tensor) -> Tensor:
    """(I+1,) interaction counts per item row -> (I+1,) log q, the chance an example is that item.

    Unseen rows get the smallest observed count's probability so logs stay finite.
    """
    counts = item_counts.to(torch.float64)
    floor = counts[counts > 0].min() if bool((counts > 0).any()) else torch.tensor(1.0)
    q = counts.clamp_min(float(floor)) / counts.sum().clamp_min(1.0)
    return q.log().to(torch.float32)


def in_batch_softmax_loss(
    user_vecs: Tensor,
    item_vecs: Tensor,
    item_rows: Tensor,
    temperature: float,
    log_q: Tensor | None = None,
) -> Tensor:
    """Mean cross-entropy of each user against every item of the batch.

    Args:
        user_vecs: (B, D) user vectors; row b's positive is item b.
        item_vecs: (B, D) item vectors.
        item_rows: (B,) int64 item rows; equal rows at other positions are accidental hits
            (the same item as another example's positive) and are masked out, not negatives.
        temperature: divides the inner-product scores.
        log_q: (B,) log sampling probability of each in-batch item, or None for no correction.
    Returns:
        Scalar loss.
    """
    logits = user_vecs @ item_vecs.T / temperature
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = item_rows[None, :] == item_rows[:, None]
    eye = torch.eye(len(item_rows), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    labels = torch.arange(len(item_rows), device=logits.device)
    return F.cross_entropy(logits, labels)


def log_expected_count(log_q: Tensor, batch_size: int, n_uniform: int, n_items: int) -> Tensor:
    """log of how many times an item is expected among a batch's negatives.

    In-batch negatives draw ``batch_size`` items from the unigram distribution q; mixed
    negatives add ``n_uniform`` draws from the uniform one over ``n_items`` items. Both
    sources feed one softmax, so every candidate, whichever source brought it, is corrected
    by the log of its expected count under the mixture: log(B * q_j + M / n) (Yang et al.,
    "Mixed Negative Sampling", WWW 2020). With M = 0 this is log q_j + log B, the plain
    logQ correction up to a constant that the softmax ignores.

    log_q: (...) log unigram probabilities -> (...) float32.
    """
    expected = batch_size * log_q.double().exp() + n_uniform / max(n_items, 1)
    return expected.log().to(torch.float32)


def mixed_softmax_loss(
    user_vecs: Tensor,
    item_vecs: Tensor,
    item_rows: Tensor,
    temperature: float,
    correction: Tensor | None = None,
    extra_vecs: Tensor | None = None,
    extra_rows: Tensor | None = None,
    extra_correction: Tensor | None = None,
    hard_vecs: Tensor | None = None,
    hard_rows: Tensor | None = None,
    hard_correction: Tensor | None = None,
) -> Tensor:
    """Sampled softmax over in-batch, shared extra (uniform) and per-example hard negatives.

    Args:
        user_vecs: (B, D) user vectors; row b's positive is item b.
        item_vecs: (B, D) vectors of the batch's positives (also in-batch negatives).
        item_rows: (B,) int64 item rows of the positives.
        temperature: divides the inner-product scores.
        correction: (B,) value subtracted from each in-batch candidate's logit (logQ), or None.
        extra_vecs, extra_rows, extra_correction: (M, D), (M,), (M,) negatives shared by
            every example (e.g. uniformly sampled items).
        hard_vecs, hard_rows, hard_correction: (B, H, D), (B, H), (B, H) negatives of each
            example alone (e.g. mined top-scoring non-positives).
    Any candidate equal to the example's own positive item is an accidental hit and is
    masked out (its logit set to -inf), except the positive itself at column b.
    Returns the scalar mean cross-entropy.
    """
    logits = user_vecs @ item_vecs.T / temperature
    if correction is not None:
        logits = logits - correction[None, :]
    same = item_rows[None, :] == item_rows[:, None]
    eye = torch.eye(len(item_rows), dtype=torch.bool, device=logits.device)
    blocks = [logits.masked_fill(same & ~eye, float("-inf"))]
    if extra_vecs is not None and extra_rows is not None:
        extra = user_vecs @ extra_vecs.T / temperature
        if extra_correction is not None:
            extra = extra - extra_correction[None, :]
        blocks.append(extra.masked_fill(extra_rows[None, :] == item_rows[:, None], float("-inf")))
    if hard_vecs is not None and hard_rows is not None:
        hard = torch.einsum("bd,bhd->bh", user_vecs, hard_vecs) / temperature
        if hard_correction is not None:
            hard = hard - hard_correction
        blocks.append(hard.masked_fill(hard_rows == item_rows[:, None], float("-inf")))
    labels = torch.arange(len(item_rows), device=logits.device)
    return F.cross_entropy(torch.cat(blocks, dim=1), labels)


def bce_loss(
    user_vecs: Tensor, item_vecs: Tensor, labels: Tensor, temperature: float, bias: Tensor
) -> Tensor:
    """Pointwise binary cross-entropy on (user, item, click) impressions.

    Args:
        user_vecs, item_vecs: (B, D) vectors of each impression's user and item.
        labels: (B,) float32 in {0, 1}.
        temperature: divides the inner product; bias: scalar learnable offset (calibrates the
            click rate; it does not change the ranking).
    """
    logits = (user_vecs * item_vecs).sum(dim=1) / temperature + bias
    return F.binary_cross_entropy_with_logits(logits, labels)


def full_softmax_loss(
    user_vecs: Tensor, catalogue_vecs: Tensor, item_rows: Tensor, temperature: float
) -> Tensor:
    """Cross-entropy of each example's positive against every item of the catalogue: the
    exact softmax that sampled softmax estimates (no sampling, so no bias to correct).

    Args:
        user_vecs: (B, D) user vectors.
        catalogue_vecs: (I, D) vectors of item rows 1..I (row 0, the unknown bucket, is not
            a candidate).
        item_rows: (B,) int64 rows (1..I) of each example's positive.
        temperature: divides the inner-product scores.
    Returns the scalar mean cross-entropy. Another positive of the same user is a
    candidate like any item (as in the full-softmax objective of the literature).
    """
    logits = user_vecs @ catalogue_vecs.T / temperature
    return F.cross_entropy(logits, item_rows - 1)
