"""Per-user item sets in CSR form: the held-out and masked items of every user that the
full-ranking evaluation (``model.metrics``) reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["CsrSets"]


@dataclass(frozen=True)
class CsrSets:
    """One sorted, duplicate-free set of item rows per user row, stored CSR-style.

    Attributes:
        indptr: `(n_rows + 1,) int64`; row `u` owns `indices[indptr[u]:indptr[u + 1]]`.
        indices: `(nnz,) int64` item rows, strictly increasing within each row.
    """

    indptr: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        indptr, indices = self.indptr, self.indices
        if indptr.ndim != 1 or indices.ndim != 1 or len(indptr) < 1:
            raise ValueError("CsrSets needs 1-D indptr (n_rows + 1,) and 1-D indices (nnz,)")
        if indptr.dtype != np.int64 or indices.dtype != np.int64:
            raise ValueError(
                f"CsrSets arrays must be int64, got indptr {indptr.dtype}, indices {indices.dtype}"
            )
        if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
            raise ValueError(
                "CsrSets indptr must start at 0, be non-decreasing and end at len(indices)"
            )
        if len(indices) and indices.min() < 0:
            raise ValueError("CsrSets indices must be >= 0")
        # Strictly increasing within each row; steps across a row boundary are exempt.
        not_increasing = np.diff(indices) <= 0
        boundaries = indptr[1:-1] - 1
        boundaries = boundaries[(boundaries >= 0) & (boundaries < len(not_increasing))]
        not_increasing[boundaries] = False
        if np.any(not_increasing):
            raise ValueError("CsrSets indices must be sorted and unique within each row")

    @classmethod
    def from_pairs(
        cls,
        user_rows: npt.ArrayLike,
        item_rows: npt.ArrayLike,
        n_users: int,
    ) -> CsrSets:
        """Build per-user sets from `(user_row, item_row)` pairs, dropping duplicate pairs.

        Args:
            user_rows: `(m,)` integer user rows in `[0, n_users)`.
            item_rows: `(m,)` integer item rows, `>= 0`.
            n_users: number of rows of the result; users with no pair get an empty set.
        """
        users = np.asarray(user_rows)
        items = np.asarray(item_rows)
        if users.ndim != 1 or items.ndim != 1 or users.shape != items.shape:
            raise ValueError(
                f"user_rows and item_rows must be 1-D and equally long, "
                f"got shapes {users.shape} and {items.shape}"
            )
        if users.size and not (
            np.issubdtype(users.dtype, np.integer) and np.issubdtype(items.dtype, np.integer)
        ):
            raise ValueError(f"pairs must be integers, got {users.dtype} and {items.dtype}")
        users = users.astype(np.int64, copy=False)
        items = items.astype(np.int64, copy=False)
        if n_users < 0:
            raise ValueError(f"n_users must be >= 0, got {n_users}")
        if users.size and (users.min() < 0 or users.max() >= n_users):
            raise ValueError(f"user_rows must lie in [0, {n_users})")
        if items.size and items.min() < 0:
            raise ValueError("item_rows must be >= 0")
        base = int(items.max()) + 1 if items.size else 1
        if n_users <= np.iinfo(np.int64).max // base:
            # One int64 key per pair, sorted in place: 2-3x faster than a two-key lexsort
            # (10M pairs: about 0.8 s against 2.3 s here) and no (m,) order array.
            key = users * base
            key += items
            key.sort()
            keep = np.empty(len(key), dtype=bool)
            keep[:1] = True
            np.not_equal(key[1:], key[:-1], out=keep[1:])
            users, items = np.divmod(key[keep], base)
        else:  # the keys would overflow int64
            order = np.lexsort((items, users))
            users, items = users[order], items[order]
            keep = np.ones(len(users), dtype=bool)
            keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
            users, items = users[keep], items[keep]
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
        return cls(indptr=indptr, indices=np.ascontiguousarray(items))

    @property
    def n_rows(self) -> int:
        """Number of user rows."""
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        """Total number of (user, item) members."""
        return len(self.indices)

    def lengths(self) -> npt.NDArray[np.int64]:
        """`(n_rows,) int64` set sizes."""
        return np.diff(self.indptr)

    def row(self, user_row: int) -> npt.NDArray[np.int64]:
        """`(len,) int64` sorted item rows of one user (a view)."""
        return self.indices[self.indptr[user_row] : self.indptr[user_row + 1]]

    def gather(
        self, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Flatten the sets of `rows` (shape `(b,)`) into parallel `(m,)` arrays.

        Returns:
            `(local, items)`: `local[j]` is the position in `rows` that owns `items[j]`;
            items stay sorted within each position, positions ascend.
        """
        starts = self.indptr[rows]
        lens = self.indptr[rows + 1] - starts
        local = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
        seg_starts = np.cumsum(lens) - lens
        pos = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(starts - seg_starts, lens)
        return local, self.indices[pos]
