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

__all__ = ["bce_loss", "in_batch_softmax_loss", "log_sampling_probability"]


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
        user_vecs: (B, D) unit user vectors; row b's positive is item b.
        item_vecs: (B, D) unit item vectors.
        item_rows: (B,) int64 item rows; equal rows at other positions are accidental hits
            (the same item as another example's positive) and are masked out, not negatives.
        temperature: divides the cosine scores.
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


def bce_loss(
    user_vecs: Tensor, item_vecs: Tensor, labels: Tensor, temperature: float, bias: Tensor
) -> Tensor:
    """Pointwise binary cross-entropy on (user, item, click) impressions.

    Args:
        user_vecs, item_vecs: (B, D) unit vectors of each impression's user and item.
        labels: (B,) float32 in {0, 1}.
        temperature: divides the cosine; bias: scalar learnable offset (calibrates the
            click rate; it does not change the ranking).
    """
    logits = (user_vecs * item_vecs).sum(dim=1) / temperature + bias
    return F.binary_cross_entropy_with_logits(logits, labels)
