"""Exact masked top-k for the two score shapes that cover most evaluation work, without
materialising a `(b, n_items)` score block.

``full_ranking_topk`` ranks any scorer by writing a dense score block per user block,
masking it and running ``torch.topk`` over every row. At 1M items that is 4 MB written and
read per user, and it was most of a large nightly's evaluation (20k users: about 118 s for
the model, 51 s for popularity, 80 s for the oracle on 2 cores, docs/scaling.md). Two
shapes have a cheaper exact answer:

- ``VectorScores``: score = user vector . item vector (the two-tower model, the synthetic
  oracle). Faiss's exact inner-product k-NN (``faiss.knn``: a GEMM over cache-sized tiles
  fused with a per-query heap) fetches each user's top ``k + 1 + |excluded| + margin``
  items; their scores are recomputed in float64, the excluded ones dropped, and the rest
  sorted by (score desc, item row asc). A user is ranked densely instead when the list
  cannot settle the top k: a tie at the boundary, or a (k+1)-th score within rounding of
  the best item left out.
- ``SharedScores``: one score row for every user (popularity). The catalogue is sorted
  once; each user's list is that order with the user's excluded items skipped.

Both return what ``full_ranking_topk`` returns for the same scores: top k by score, ties
broken by the lower item row, excluded items never, ``-1`` past the end (exactly, where the
scores are exact in float32, as in the tests; otherwise two scores within float32 rounding
of each other may swap places). Unlike the dense path, whose BLAS rounding changes with the
block's size and threads, a user's list does not depend on the users ranked with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import faiss
import numpy as np
import numpy.typing as npt
import torch

from model.index import tune_blas_threshold
from model.metrics import full_ranking_topk
from model.sets import CsrSets
from model.side_by_side import run_batches
from model.threadgov import adaptive_loop

__all__ = ["SharedScores", "VectorScores", "shared_topk", "vector_topk"]

# Users per exact k-NN call. Faiss takes its GEMM path from 20 queries (at d = 64, see
# ``model.index.tune_blas_threshold``) and amortises the item tiles over the whole batch;
# the dense path's block (16 users at 1M items) would keep it on the scalar scan (6 ms per
# user measured at 1M items, against about 1.7 ms in blocks of 1024).
_VECTOR_BLOCK = 1024
# Candidates fetched beyond k + 1 + the most items a user of the block has excluded.
_MARGIN = 32
# Bytes of float64 gathered per step of the exact rescoring.
_EXACT_BYTES = 64 << 20


@dataclass(frozen=True)
class VectorScores:
    """Scores that are inner products: user row u scores item row i as ``users[u] @ items[i]``.

    users: `(U, D)` float32, indexed by user row; items: `(n_items, D)` float32. Callable
    as a ``ScoreBlockFn`` (a dense `(b, n_items)` block), so any caller can still rank it
    the generic way; ``model.fullrank.rank_part`` takes the fast path.
    """

    users: npt.NDArray[np.float32]
    items: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        for name in ("users", "items"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.dtype != np.float32:
                raise ValueError(f"{name} must be a 2-D float32 array, got {arr.dtype} {arr.shape}")
        if self.users.shape[1] != self.items.shape[1]:
            raise ValueError(
                f"users have {self.users.shape[1]} dims but items have {self.items.shape[1]}"
            )
        if not (np.isfinite(self.items).all() and np.isfinite(self.users).all()):
            raise ValueError("vectors hold NaN or infinite values; ranks would be meaningless")

    @classmethod
    def of(
        cls, users: npt.ArrayLike | torch.Tensor, items: npt.ArrayLike | torch.Tensor
    ) -> VectorScores:
        """From torch tensors or arrays (any float dtype), as C-contiguous float32."""

        def arr(x: npt.ArrayLike | torch.Tensor) -> npt.NDArray[np.float32]:
            if isinstance(x, torch.Tensor):
                x = x.detach().cpu().numpy()
            return np.ascontiguousarray(x, dtype=np.float32)

        return cls(arr(users), arr(items))

    def __call__(self, rows: npt.NDArray[np.int64]) -> torch.Tensor:
        return torch.from_numpy(self.users[rows] @ self.items.T)


@dataclass(frozen=True)
class SharedScores:
    """One score per item, the same for every user: `(n_items,)` float32 (e.g. popularity)."""

    scores: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        if self.scores.ndim != 1:
            raise ValueError(f"scores must be 1-D, got shape {self.scores.shape}")
        if np.isnan(self.scores).any():
            raise ValueError("scores hold NaN values; ranks would be meaningless")

    def __call__(self, rows: npt.NDArray[np.int64]) -> torch.Tensor:
        row = torch.from_numpy(np.ascontiguousarray(self.scores, dtype=np.float32))
        return row.expand(len(rows), -1).clone()


def _excluded(
    cand: npt.NDArray[np.int64], block: npt.NDArray[np.int64], exclude: CsrSets, n_items: int
) -> npt.NDArray[np.bool_]:
    """`(b, m)` candidate item rows of the block's users -> True where excluded for that user."""
    local, items = exclude.gather(block)
    if len(items) == 0:
        return np.zeros(cand.shape, dtype=bool)
    keys = local * n_items + items  # sorted: positions ascend, items ascend within each
    cand_keys = np.arange(len(block), dtype=np.int64)[:, None] * n_items + cand
    at = np.minimum(np.searchsorted(keys, cand_keys), len(keys) - 1)
    return keys[at] == cand_keys


def _first_kept(
    cand: npt.NDArray[np.int64], drop: npt.NDArray[np.bool_], width: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per row, the first ``width`` candidates not dropped (order kept): `(b, width)` item
    rows padded with -1, and `(b,)` how many each row has."""
    kept = ~drop
    count = kept.sum(axis=1)
    slot = np.cumsum(kept, axis=1) - 1
    out = np.full((len(cand), width), -1, dtype=np.int64)
    r, c = np.nonzero(kept & (slot < width))
    out[r, slot[r, c]] = cand[r, c]
    return out, np.minimum(count, width)


def shared_topk(
    scores: SharedScores,
    user_rows: npt.NDArray[np.int64],
    n_items: int,
    exclude: CsrSets,
    k: int,
) -> npt.NDArray[np.int64]:
    """`full_ranking_topk` of a shared score row: `(n, k)` int64 item rows, -1 past the end."""
    if len(scores.scores) != n_items:
        raise ValueError(f"shared scores cover {len(scores.scores)} items, expected {n_items}")
    # Score desc, then item row asc: the dense path's order, ties included.
    order = np.lexsort((np.arange(n_items), -scores.scores.astype(np.float64)))
    order = order[~np.isneginf(scores.scores[order])]
    out = np.full((len(user_rows), k), -1, dtype=np.int64)
    lengths = exclude.lengths()
    for start in range(0, len(user_rows), 4096):
        block = user_rows[start : start + 4096]
        width = min(len(order), k + int(lengths[block].max(initial=0)))
        cand = np.broadcast_to(order[:width], (len(block), width))
        top, _ = _first_kept(cand, _excluded(cand, block, exclude, n_items), k)
        out[start : start + len(block)] = top
    return out


def _exact_scores(
    users: npt.NDArray[np.float32], items: npt.NDArray[np.float32], cand: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """`(b, D)` users, `(b, w)` candidate item rows -> `(b, w)` inner products in float64.

    Each product of two float32 values is exact in float64 and each score is summed on its
    own, so a user's scores do not depend on which other users share the block (a BLAS
    GEMM's rounding does, through its blocking and threads): sharded and unsplit runs rank
    alike wherever the shards are cut.
    """
    out = np.empty(cand.shape, np.float64)
    u64 = users.astype(np.float64)
    # Rows per step so that the (rows, w, D) float64 gather stays near _EXACT_BYTES: at
    # w = 2,000 and D = 1,280 (a hybrid on ml-latest-small) 128 rows were 2.6 GB.
    step = max(1, min(128, _EXACT_BYTES // max(1, cand.shape[1] * users.shape[1] * 8)))
    for lo in range(0, len(cand), step):
        gathered = items[cand[lo : lo + step]].astype(np.float64)
        out[lo : lo + step] = (gathered * u64[lo : lo + step, None, :]).sum(axis=2)
    return out


def _width_groups(lengths: npt.NDArray[np.int64], base: int) -> list[tuple[int, int]]:
    """[start, end) runs of ascending ``lengths`` whose candidate widths (``base`` +
    length) share a power of two: a run's width is at most twice its first user's."""
    bucket = np.ceil(np.log2(base + lengths.astype(np.float64))).astype(np.int64)
    cuts = np.flatnonzero(np.diff(bucket)) + 1
    edges = [0, *cuts.tolist(), len(lengths)]
    return [(a, b) for a, b in pairwise(edges) if b > a]


def vector_topk(
    scores: VectorScores,
    user_rows: npt.NDArray[np.int64],
    n_items: int,
    exclude: CsrSets,
    k: int,
) -> npt.NDArray[np.int64]:
    """`full_ranking_topk` of inner-product scores: `(n, k)` int64 item rows, -1 past the
    end. A user's list does not depend on the other users ranked with it (see
    ``_exact_scores``), so any split of ``user_rows`` gives the same lists."""
    if len(scores.items) != n_items:
        raise ValueError(f"item vectors cover {len(scores.items)} items, expected {n_items}")
    tune_blas_threshold(scores.items.shape[1])  # batches through BLAS, not the scalar scan
    lengths = exclude.lengths()
    depth = min(k, n_items)
    # Bound on |faiss's float32 score - the exact one| per user: D roundings of at most
    # |u| max|v| 2^-24 each (Cauchy-Schwarz), doubled for safety.
    slack = (
        2.0 * scores.items.shape[1] * 2.0**-24 * float(np.linalg.norm(scores.items, axis=1).max())
    )
    out = np.full((len(user_rows), k), -1, dtype=np.int64)
    # Users in order of how many items they exclude, each block cut where the width
    # doubles: a block's width is set by its heaviest user, and one user with 2,000
    # training items would otherwise make every user of the block fetch and rescore 2,000
    # candidates (ml-latest-small). Lists do not depend on the block, so the order is free.
    order_of = np.argsort(lengths[user_rows], kind="stable")
    base = depth + 1 + _MARGIN

    def rank_rows(at: npt.NDArray[np.int64]) -> None:
        """Rank the users ``user_rows[at]`` (one width group) into ``out[at]``."""
        block = user_rows[at]
        users = scores.users[block]
        # Room for every excluded item, the (k+1)-th kept one (it tells whether a tie
        # straddles the boundary) and a margin, so that the last candidate rarely decides.
        width = min(n_items, base + int(lengths[block].max(initial=0)))
        approx, cand = faiss.knn(users, scores.items, width, metric=faiss.METRIC_INNER_PRODUCT)
        key = _exact_scores(users, scores.items, cand)
        key[_excluded(cand, block, exclude, n_items)] = -np.inf
        # Sort each row by (score desc, item row asc); excluded slots sort last.
        row_of = np.repeat(np.arange(len(block)), width)
        order = np.lexsort((cand.ravel(), -key.ravel(), row_of)).reshape(len(block), width)
        order -= np.arange(len(block))[:, None] * width
        cand = np.take_along_axis(cand, order, axis=1)
        key = np.take_along_axis(key, order, axis=1)
        top, count = _first_kept(cand, np.isneginf(key), depth + 1)
        out[at, :depth] = top[:, :depth]
        if width < n_items:
            # Faiss kept `width` items of all: a row is settled when its k-th kept score
            # beats the (k+1)-th and that one beats every item left out (at most the last
            # candidate's float32 score plus the rounding slack). Others, where a tie
            # straddles the boundary or the list was too short, are ranked densely, one
            # user per call so that no other user's block changes their rounding.
            bound = approx[:, -1] + slack * np.linalg.norm(users, axis=1)
            kth, next_ = key[:, depth - 1], key[:, depth]
            unsettled = np.flatnonzero((count <= depth) | (kth == next_) | (next_ <= bound))
            for row in unsettled:
                out[at[row]] = full_ranking_topk(
                    scores, block[row : row + 1], n_items, exclude, k, block_users=1
                )

    def rank(lo: int, hi: int) -> None:
        at = order_of[lo:hi]
        for start, end in _width_groups(lengths[user_rows[at]], base):
            rank_rows(at[start:end])

    # On shared cores, smaller blocks side by side: a user's list does not depend on the
    # block it is ranked in, so they give the same lists.
    run_batches(rank, len(user_rows), _VECTOR_BLOCK, adaptive_loop(), shrink=True)
    return out
