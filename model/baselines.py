"""Classical collaborative-filtering baselines on the binary user x item training matrix:
ItemKNN (sparse top-k cosine item-item similarity) and EASE (Steck 2019, a dense closed
form), each scoring full item rows in the `ScoreBlockFn` form `model.metrics` ranks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack

__all__ = [
    "EASE",
    "Baseline",
    "BaselineKind",
    "BaselineSkipped",
    "ItemKNN",
    "fit_baseline",
    "interaction_matrix",
]

logger = logging.getLogger(__name__)

BaselineKind = Literal["itemknn", "ease", "auto"]

# Budget of co-occurrence entries materialised per ItemKNN block (~12 bytes each).
_KNN_BLOCK_NNZ = 20_000_000
_SYMMETRISE_BLOCK = 2048


class BaselineSkipped(Exception):
    """A baseline declined to fit this data; ``reason`` says why (e.g. too many items)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def interaction_matrix(
    user: npt.ArrayLike, item: npt.ArrayLike, n_users: int, n_items: int
) -> sp.csr_array:
    """`(n_users, n_items)` binary float32 CSR matrix of the (user, item) position pairs
    (`(m,)` each); repeated pairs count once."""
    u, i = np.asarray(user), np.asarray(item)
    if u.ndim != 1 or u.shape != i.shape:
        raise ValueError(f"user and item must be equally long 1-D arrays, got {u.shape}, {i.shape}")
    if u.size and not (np.issubdtype(u.dtype, np.integer) and np.issubdtype(i.dtype, np.integer)):
        raise ValueError(f"positions must be integers, got {u.dtype} and {i.dtype}")
    if u.size and (u.min() < 0 or u.max() >= n_users or i.min() < 0 or i.max() >= n_items):
        raise ValueError(f"positions must lie in [0, {n_users}) x [0, {n_items})")
    x = sp.csr_array(
        (np.ones(len(u), np.float32), (u.astype(np.int64), i.astype(np.int64))),
        shape=(n_users, n_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _check_user_rows(user_rows: npt.ArrayLike, n_users: int) -> npt.NDArray[np.int64]:
    rows = np.asarray(user_rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"user_rows must be a 1-D integer array, got {rows.dtype} {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= n_users):
        raise ValueError(f"user_rows must lie in [0, {n_users})")
    return rows.astype(np.int64, copy=False)


@dataclass(frozen=True)
class ItemKNN:
    """Item-based k-nearest neighbours: ``score(u, j) = sum of sim(i, j)`` over the items i
    of u's history that are among j's ``k`` most similar items.

    ``sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink)``, the cosine of the binary item
    columns damped by ``shrink`` (which discounts pairs with little support); self-similarity
    is dropped and ties between neighbours go to the lower item position.
    """

    x: sp.csr_array  # (n_users, n_items) binary float32 training matrix
    weights: sp.csr_array  # (n_items, n_items): [i, j] = sim(i, j) if i in j's top k, float32
    name: ClassVar[str] = "itemknn"

    @classmethod
    def fit(
        cls,
        train_user_pos: npt.ArrayLike,
        train_item_pos: npt.ArrayLike,
        n_users: int,
        n_items: int,
        *,
        k: int = 100,
        shrink: float = 0.0,
    ) -> ItemKNN:
        """Fit on `(m,)` training (user, item) positions; cost is the number of co-occurring
        item pairs (sum of squared user degrees), computed in row blocks of bounded size."""
        if k < 1 or shrink < 0:
            raise ValueError(f"need k >= 1 and shrink >= 0, got k={k}, shrink={shrink}")
        started = time.perf_counter()
        x = interaction_matrix(train_user_pos, train_item_pos, n_users, n_items)
        xt = x.T.tocsr()  # (n_items, n_users)
        norms = np.sqrt(np.asarray(x.sum(axis=0), np.float64)).ravel()  # (n_items,)
        # Upper bound of row i's co-occurrence entries: sum of degrees of i's users.
        bound = xt @ np.asarray(x.sum(axis=1), np.float64).ravel()
        cum = np.r_[0.0, np.cumsum(bound)]  # cum[j] = bound of items 0..j-1
        rows, cols, vals = [], [], []
        start = 0
        while start < n_items:
            stop = int(np.searchsorted(cum, cum[start] + _KNN_BLOCK_NNZ, side="right")) - 1
            stop = min(max(stop, start + 1), n_items)
            r, c, v = _top_k_rows(xt[start:stop] @ x, start, norms, k, shrink)
            rows.append(r)
            cols.append(c)
            vals.append(v)
            start = stop
        # (j, i) pairs hold j's neighbours i; transpose so that x @ weights sums over i.
        top = sp.csr_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_items, n_items),
        )
        weights = top.T.tocsr()
        logger.debug(
            "ItemKNN fit: %d users x %d items, k=%d, %d weights in %.2f s",
            n_users,
            n_items,
            k,
            weights.nnz,
            time.perf_counter() - started,
        )
        return cls(x=x, weights=weights)

    def scores(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """`(b,) int64` user positions -> fresh `(b, n_items) float32` scores."""
        rows = _check_user_rows(user_rows, self.x.shape[0])
        return np.asarray((self.x[rows] @ self.weights).toarray(), dtype=np.float32)

    def with_inputs(self, user_pos: npt.ArrayLike, item_pos: npt.ArrayLike) -> ItemKNN:
        """The same fitted similarities, scoring users from these interactions instead of
        the training ones (e.g. train + validation, everything known before the test)."""
        n_users, n_items = self.x.shape
        return replace(self, x=interaction_matrix(user_pos, item_pos, n_users, n_items))


def _top_k_rows(
    co: sp.csr_array, offset: int, norms: npt.NDArray[np.float64], k: int, shrink: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Cosine of a `(b, n_items)` co-occurrence row block for items `offset..offset + b`,
    minus self-pairs, reduced to each row's k largest; returns COO (row, col, value)."""
    co = co.tocsr()
    co.sort_indices()  # ties then fall to the lower column in the stable sort below
    row = np.repeat(np.arange(co.shape[0], dtype=np.int64), np.diff(co.indptr)) + offset
    col = co.indices.astype(np.int64)
    sim = co.data / (norms[row] * norms[col] + shrink)
    keep = row != col
    row, col, sim = row[keep], col[keep], sim[keep]
    order = np.lexsort((-sim, row))
    row, col, sim = row[order], col[order], sim[order]
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if len(row) else row
    rank = np.arange(len(row)) - np.repeat(starts, np.diff(np.r_[starts, len(row)]))
    top = (rank < k) & (sim > 0)
    return row[top], col[top], sim[top].astype(np.float32)


@dataclass(frozen=True)
class EASE:
    """Embarrassingly shallow autoencoder (Steck 2019): ``scores = X_u @ B`` with
    ``B = I - P / diag(P)``, ``P = (X^T X + l2 I)^-1`` and a zero diagonal.

    Only items with a training interaction enter the dense solve: an item without one has
    a zero Gram row, so its column of B is exactly zero and its score 0.
    """

    x: sp.csr_array  # (n_users, n_active) binary float32, columns = active items
    active: npt.NDArray[np.int64]  # (n_active,) item positions with training interactions
    weights: npt.NDArray[np.float32]  # (n_active, n_active) B, zero diagonal
    n_items: int
    name: ClassVar[str] = "ease"

    @classmethod
    def fit(
        cls,
        train_user_pos: npt.ArrayLike,
        train_item_pos: npt.ArrayLike,
        n_users: int,
        n_items: int,
        *,
        l2: float = 500.0,
        max_items: int = 25_000,
    ) -> EASE:
        """Fit on `(m,)` training (user, item) positions in float32.

        Raises BaselineSkipped when more than ``max_items`` items have training
        interactions: the dense solve needs `4 * n^2` bytes and `~n^3` flops (measured
        114 s and 3.4 GiB peak at 20,000 items / 400k interactions on 2 shared cores).
        """
        if l2 <= 0:
            raise ValueError(f"l2 must be > 0 (it keeps the Gram matrix invertible), got {l2}")
        full = interaction_matrix(train_user_pos, train_item_pos, n_users, n_items)
        active = np.flatnonzero(np.diff(full.tocsc().indptr)).astype(np.int64)
        n = len(active)
        if n > max_items:
            raise BaselineSkipped(
                f"EASE needs a dense {n} x {n} inverse ({4 * n * n / 2**30:.1f} GiB float32, "
                f"~n^3 flops) for {n} items with training interactions > max_items={max_items}"
            )
        started = time.perf_counter()
        x = full[:, active].tocsr()
        gram = np.asarray((x.T @ x).toarray(), dtype=np.float32)  # counts: exact in float32
        gram[np.diag_indices(n)] += np.float32(l2)
        weights = _ease_weights(gram)
        logger.debug(
            "EASE fit: %d users x %d active items (of %d), l2=%g in %.2f s",
            n_users,
            n,
            n_items,
            l2,
            time.perf_counter() - started,
        )
        return cls(x=x, active=active, weights=weights, n_items=n_items)

    def with_inputs(self, user_pos: npt.ArrayLike, item_pos: npt.ArrayLike) -> EASE:
        """The same fitted weights, scoring users from these interactions instead of the
        training ones (items outside the fitted ones carry no weight and are dropped)."""
        full = interaction_matrix(user_pos, item_pos, self.x.shape[0], self.n_items)
        return replace(self, x=full[:, self.active].tocsr())

    def scores(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """`(b,) int64` user positions -> fresh `(b, n_items) float32` scores."""
        rows = _check_user_rows(user_rows, self.x.shape[0])
        dense = np.asarray(self.x[rows] @ self.weights, dtype=np.float32)
        if len(self.active) == self.n_items:
            return np.ascontiguousarray(dense)
        out = np.zeros((len(rows), self.n_items), np.float32)
        out[:, self.active] = dense
        return out


def _ease_weights(gram: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """B from the regularised `(n, n)` Gram matrix, computed in its buffer (no n^2 copy)."""
    n = gram.shape[0]
    if n == 0:
        return gram
    # Cholesky inverse (potrf + potri, ~n^3 flops, half of an LU inverse) in place; the
    # matrix is symmetric, so its transpose is the same matrix in Fortran order.
    chol, info = lapack.spotrf(gram.T, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise ValueError(f"EASE: Cholesky failed (LAPACK info {info}); is l2 too small?")
    inv, info = lapack.spotri(chol, lower=0, overwrite_c=1)
    if info != 0:
        raise ValueError(f"EASE: inverse failed (LAPACK info {info})")
    _mirror_upper(inv)  # potri fills one triangle only
    p = np.ascontiguousarray(inv.T)  # symmetric: a free C-order view when done in place
    diag = p.diagonal().copy()
    p /= -diag[None, :]  # B_ij = -P_ij / P_jj off the diagonal
    np.fill_diagonal(p, 0.0)
    return p


def _mirror_upper(a: npt.NDArray[np.float32]) -> None:
    """Copy the upper triangle of square ``a`` onto its lower one, in bounded blocks."""
    n = a.shape[0]
    for s in range(0, n, _SYMMETRISE_BLOCK):
        e = min(s + _SYMMETRISE_BLOCK, n)
        a[s:e, :s] = a[:s, s:e].T
        d = a[s:e, s:e]
        d[...] = np.triu(d) + np.triu(d, 1).T


Baseline = ItemKNN | EASE


def fit_baseline(
    kind: BaselineKind,
    train_user_pos: npt.ArrayLike,
    train_item_pos: npt.ArrayLike,
    n_users: int,
    n_items: int,
    *,
    max_items: int = 25_000,
    l2: float = 500.0,
    k: int = 100,
    shrink: float = 0.0,
) -> Baseline:
    """Fit one baseline; "auto" is EASE unless it is skipped (more than ``max_items``
    trained items), then ItemKNN. Logs which was chosen and why.

    ``kind="ease"`` propagates BaselineSkipped instead of falling back.
    """
    args = (train_user_pos, train_item_pos, n_users, n_items)
    if kind == "itemknn":
        logger.info("baseline: ItemKNN (asked for)")
        return ItemKNN.fit(*args, k=k, shrink=shrink)
    if kind == "ease":
        logger.info("baseline: EASE (asked for)")
        return EASE.fit(*args, l2=l2, max_items=max_items)
    if kind != "auto":
        raise ValueError(f"unknown baseline kind {kind!r}: expected itemknn, ease or auto")
    try:
        model = EASE.fit(*args, l2=l2, max_items=max_items)
    except BaselineSkipped as skipped:
        logger.info("baseline: ItemKNN, because EASE was skipped: %s", skipped.reason)
        return ItemKNN.fit(*args, k=k, shrink=shrink)
    logger.info("baseline: EASE (%d trained items <= max_items=%d)", len(model.active), max_items)
    return model
