"""Per-user recent-item histories: as fixed-width arrays of item positions (padding -1),
the leak-free history of every training example; as ragged rows (``RaggedRows``), each
user's latest items for serving, whose memory is the items held, not users x width.

Both are vectorised (one sort plus segment arithmetic, then row blocks), so 10M
interactions take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "PAD",
    "RaggedRows",
    "history_at_end",
    "history_before",
    "latest_items",
    "user_time_order",
]

PAD = -1  # item position of an empty history slot

_BLOCK_ROWS = 1 << 15


@dataclass(frozen=True)
class RaggedRows:
    """Variable-length int64 rows, CSR-style: row ``r`` is ``values[indptr[r]:indptr[r + 1]]``.
    R rows, N values in all. A user's latest items as the serving path holds them: a bag of
    3,000 items costs its heavy users 24 KB each and everyone else only what they hold."""

    indptr: npt.NDArray[np.int64]  # (R + 1,), non-decreasing, indptr[0] = 0
    values: npt.NDArray[np.int64]  # (N,), N = indptr[-1]

    def __post_init__(self) -> None:
        ptr = self.indptr
        if ptr.ndim != 1 or len(ptr) < 1 or ptr[0] != 0 or (np.diff(ptr) < 0).any():
            raise ValueError("indptr must be a non-decreasing 1-D array starting at 0")
        if self.values.ndim != 1 or len(self.values) != ptr[-1]:
            raise ValueError(f"values must be 1-D of length indptr[-1]={ptr[-1]}")

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> npt.NDArray[np.int64]:
        """(R,) values per row."""
        return np.diff(self.indptr)

    def row(self, r: int) -> npt.NDArray[np.int64]:
        """Row ``r`` (a view, no copy)."""
        return self.values[self.indptr[r] : self.indptr[r + 1]]

    def dense(
        self, rows: npt.NDArray[np.int64], pad: int, width: int | None = None
    ) -> npt.NDArray[np.int64]:
        """`(n, W)` copy of ``rows`` (`(n,)` int64; -1 = a missing row, all ``pad``),
        left-aligned and padded with ``pad``. ``W`` = ``width`` (rows longer are cut to
        their first ``width`` values) or, with None, the longest selected row (at least 1,
        so an all-empty selection is still a valid batch)."""
        rows = np.asarray(rows, np.int64)
        lengths = np.where(rows >= 0, self.lengths()[np.maximum(rows, 0)], 0)
        if width is None:
            width = max(1, int(lengths.max(initial=0)))
        lengths = np.minimum(lengths, width)
        out = np.full((len(rows), width), pad, np.int64)
        slot = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        src = np.repeat(self.indptr[np.maximum(rows, 0)], lengths) + slot
        out[np.repeat(np.arange(len(rows)), lengths), slot] = self.values[src]
        return out


def history_before(
    user: npt.NDArray[np.int64],
    item: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    train_mask: npt.NDArray[np.bool_],
    n_last: int,
) -> npt.NDArray[np.int64]:
    """The history each training interaction may see: its user's most recent training items
    with a strictly earlier timestamp.

    Args:
        user, item, ts: `(N,)` user positions, item positions and timestamps.
        train_mask: `(N,) bool`; the examples, and the only interactions histories draw from.
        n_last: history width.

    Returns:
        `(M, n_last) int64`, `M = train_mask.sum()`, row j for the j-th training interaction
        in input order (``np.flatnonzero(train_mask)[j]``): item positions, most recent first,
        `-1` after the last one. Interactions at the same timestamp never see each other
        (a same-second basket is not "before"), so no row holds its own interaction or
        anything at or after its time. Among earlier interactions with equal timestamps the
        later input index counts as more recent. An item the user took earlier appears
        again if it recurs (each earlier instance is its own slot).
    """
    users, items, times, mask = _check(user, item, ts, train_mask, n_last)
    u, i, t = users[mask], items[mask], times[mask]
    n = len(u)
    out = np.empty((n, n_last), np.int64)
    if n == 0:
        return out
    order = user_time_order(u, t)
    us, its, tss = u[order], i[order], t[order]
    index = np.arange(n, dtype=np.int64)
    new_user = np.r_[True, us[1:] != us[:-1]]
    new_time = new_user | np.r_[True, tss[1:] != tss[:-1]]
    # Per example (back in input order): one past its latest strictly earlier interaction
    # in sorted order, and how many such interactions its user has.
    time_start = np.maximum.accumulate(np.where(new_time, index, 0))
    user_start = np.maximum.accumulate(np.where(new_user, index, 0))
    end = np.empty(n, np.int64)
    end[order] = time_start
    avail = np.empty(n, np.int64)
    avail[order] = time_start - user_start
    # Row blocks with reused buffers keep the writes contiguous (a column-at-a-time scatter
    # measured ~2x slower at 10M rows).
    steps = np.arange(1, n_last + 1, dtype=np.int64)
    rows = min(n, _BLOCK_ROWS)
    src, pad = np.empty((rows, n_last), np.int64), np.empty((rows, n_last), bool)
    for a in range(0, n, rows):
        b = min(a + rows, n)
        m = b - a
        np.subtract(end[a:b, None], steps, out=src[:m])
        np.maximum(src[:m], 0, out=src[:m])
        np.take(its, src[:m], out=out[a:b])
        np.less(avail[a:b, None], steps, out=pad[:m])
        np.putmask(out[a:b], pad[:m], PAD)
    return out


def history_at_end(
    user: npt.NDArray[np.int64],
    item: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    mask: npt.NDArray[np.bool_],
    n_last: int,
    n_users: int,
) -> npt.NDArray[np.int64]:
    """Each user's ``n_last`` most recent items among the interactions selected by ``mask``
    (e.g. train, or train + validation for the test cut), for evaluation and serving.

    Args:
        user, item, ts: `(N,)` user positions in `[0, n_users)`, item positions, timestamps.
        mask: `(N,) bool` interactions to draw from.
        n_last: history width.
        n_users: rows of the result.

    Returns:
        `(n_users, n_last) int64` item positions, most recent first, `-1` padding; equal
        timestamps are ordered by input index (later = more recent), as in `history_before`.
    """
    latest = latest_items(user, item, ts, mask, n_last, n_users)
    return latest.dense(np.arange(n_users, dtype=np.int64), PAD, n_last)


def latest_items(
    user: npt.NDArray[np.int64],
    item: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    mask: npt.NDArray[np.bool_],
    n_last: int,
    n_users: int,
) -> RaggedRows:
    """`history_at_end` as ragged rows: row ``u`` holds user ``u``'s ``min(n_last, count)``
    latest item positions, most recent first (memory O(items held), not n_users x n_last)."""
    users, items, times, sel = _check(user, item, ts, mask, n_last)
    u = users[sel]
    if u.size and (u.min() < 0 or u.max() >= n_users):
        raise ValueError(f"user positions must lie in [0, {n_users})")
    order = user_time_order(u, times[sel])
    its = items[sel][order]
    counts = np.bincount(u, minlength=n_users).astype(np.int64)
    ends = np.cumsum(counts)  # one past each user's latest interaction in sorted order
    lengths = np.minimum(counts, n_last)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    slot = np.arange(int(indptr[-1])) - np.repeat(indptr[:-1], lengths)
    return RaggedRows(indptr, its[np.repeat(ends - 1, lengths) - slot].astype(np.int64))


def user_time_order(
    user: npt.NDArray[np.int64], ts: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """`(N,)` permutation sorting by user, then time, then input index (stable).

    One stable argsort of a combined int64 key when ``user * time span`` fits (measured about
    twice as fast as ``np.lexsort`` on two keys), else ``np.lexsort``.
    """
    if len(user) == 0:
        return np.zeros(0, np.int64)
    t0, span = int(ts.min()), int(ts.max()) - int(ts.min()) + 1
    if int(user.min()) >= 0 and (int(user.max()) + 1) * span < 2**62:
        return np.argsort(user * span + (ts - t0), kind="stable")
    return np.lexsort((ts, user))


def _check(
    user: npt.ArrayLike, item: npt.ArrayLike, ts: npt.ArrayLike, mask: npt.ArrayLike, n_last: int
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]
]:
    arrays = [np.asarray(a) for a in (user, item, ts, mask)]
    if any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
        raise ValueError(
            f"user, item, ts and mask must be equally long 1-D arrays, got "
            f"{[a.shape for a in arrays]}"
        )
    if arrays[3].dtype != np.bool_:
        raise ValueError(f"mask must be boolean, got {arrays[3].dtype}")
    if arrays[0].size and not all(np.issubdtype(a.dtype, np.integer) for a in arrays[:3]):
        raise ValueError(f"user, item and ts must be integers, got {[a.dtype for a in arrays]}")
    if n_last < 1:
        raise ValueError(f"n_last must be >= 1, got {n_last}")
    u, i, t = (a.astype(np.int64, copy=False) for a in arrays[:3])
    return u, i, t, arrays[3]
