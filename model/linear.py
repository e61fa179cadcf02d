"""The linear two-tower and its closed-form fit.

User tower: the sum of an item-input table's rows over the user's last ``history_len``
items; a bag without a known item gets a constant row instead (popularity). Item tower:
an item-ID row plus a linear map of the item's category and standardised content.
Score = inner product, not normalised: the index ranks ``bag @ W @ V.T``, a
rank-``embedding_dim`` linear autoencoder of the user's items (Steck 2020, "Autoencoders
that don't overfit towards the identity", the denoising linear autoencoder, DLAE). On
MovieLens-size logs linear item-item models are the strongest known rankers (EASE is the
full-rank one, with a zero diagonal); this is the best low-rank one, exactly, in
two-tower form.

The fit minimises the DLAE objective in closed form (no SGD, no epochs):

    min_B ||X - X B||^2 + ||Lambda^(1/2) B||^2,  rank(B) <= k,
    Lambda = p / (1 - p) diag(X^T X) + l2 I

(``p`` the input dropout the objective is the expectation of). With
``A = X^T X + Lambda``, the best rank-k ``B = W V^T`` has ``V`` the top-k eigenvectors of
``X^T X A^-1 X^T X`` and ``W = A^-1 X^T X V`` (substitute ``W`` for fixed orthonormal
``V``; what is left is a trace to maximise). One dense ``(n, n)`` Cholesky (as EASE) and
one eigenproblem: of ``(n, n)``, or of ``(U, U)`` when there are fewer users than items.

Items never trained (new ones) get ``V`` from content: a ridge map of category and
content is fitted to ``V`` and each trained item's ID row holds its residual, so a trained
item's vector is exactly its ``V`` row and a new item's the map's guess.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from model.config import TowerSpec
from model.features import Standardise

__all__ = [
    "LINEAR_MAX_ITEMS",
    "LinearFit",
    "LinearItemTower",
    "LinearUserTower",
    "bag_matrix",
    "fit_content_map",
    "fit_dlae",
]

log = logging.getLogger(__name__)

# The fit factorises a dense (n + 1, n + 1) float64 matrix in place and holds (n, U) or
# (n, n) work arrays beside it, ~n^3 flops: measured 11.5 GB peak RSS and 11 min at
# 20,000 items and 9,800 users (2 shared cores), so this limit fits a 24 GB machine.
LINEAR_MAX_ITEMS = 20_000

# Users per block of the reconstruction error: (block, n) float64 residuals.
_ERROR_BLOCK = 1024

# Ridge penalty of the content map (on standardised content and one-hot categories).
_CONTENT_RIDGE = 1.0


class LinearUserTower(nn.Module):
    """(B, H) item rows of each user's last items (0 = padding / unseen) -> (B, D): the
    sum of their input rows; a bag without a known item gets the ``constant`` row, the
    empty bag's vector (popularity), instead."""

    def __init__(self, spec: TowerSpec) -> None:
        super().__init__()
        dim = spec.tower.embedding_dim
        # Row 0 (padding, unseen items) stays zero: padding_idx keeps it out of any update.
        self.item_input = nn.EmbeddingBag(spec.n_items + 1, dim, mode="sum", padding_idx=0)
        self.constant = nn.Parameter(torch.zeros(dim))
        nn.init.zeros_(self.item_input.weight)

    def forward(self, history: Tensor) -> Tensor:
        # Added to empty bags only: as an always-on input of the fit the constant cost
        # ml-latest-small validation Recall@10 0.002-0.004 (docs/linear.md).
        empty = ~(history > 0).any(dim=1, keepdim=True)
        return self.item_input(history) + empty.to(self.constant.dtype) * self.constant


class LinearItemTower(nn.Module):
    """(B,) ID rows, (B,) category rows, (B, C) content -> (B, D): ID row (row 0 = zeros)
    + category row + linear map of standardised content."""

    def __init__(self, spec: TowerSpec) -> None:
        super().__init__()
        dim = spec.tower.embedding_dim
        self.id_embedding = nn.Embedding(spec.n_items + 1, dim, padding_idx=0)
        self.category_embedding = nn.Embedding(spec.n_categories + 1, dim)
        self.content = nn.Linear(spec.content_dim, dim)
        self.content_norm = Standardise(spec.content_dim)
        for p in self.parameters():
            nn.init.zeros_(p)

    def forward(self, id_rows: Tensor, category_rows: Tensor, content: Tensor) -> Tensor:
        return (
            self.id_embedding(id_rows)
            + self.category_embedding(category_rows)
            + self.content(self.content_norm(content))
        )


def bag_matrix(history: npt.NDArray[np.int64], n_items: int) -> sp.csr_array:
    """(U, H) item rows (0 = none) -> (U, n_items) binary float64 CSR over rows 1..n
    (column j = item row j + 1); an item repeated in a bag counts once."""
    users = np.repeat(np.arange(len(history)), history.shape[1])
    items = history.ravel()
    keep = items > 0
    x = sp.csr_array(
        (np.ones(int(keep.sum())), (users[keep], items[keep] - 1)),
        shape=(len(history), n_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


@dataclass(frozen=True)
class LinearFit:
    """A closed-form fit: ``W`` (n + 1, k), the input row of each item row, plus row n,
    the empty bag's vector (popularity in the fit's item space: what a user with no known
    item gets, not an input); ``V`` (n, k) item vectors; the mean squared reconstruction
    error per user (``||x - x W V^T||^2``, the loss without its penalty) and the seconds
    it took."""

    w: npt.NDArray[np.float64]
    v: npt.NDArray[np.float64]
    loss: float
    seconds: float


def fit_dlae(x: sp.csr_array, dim: int, l2: float, dropout: float) -> LinearFit:
    """The best rank-``dim`` DLAE of the ``(U, n)`` binary bag matrix ``x`` (see the
    module docstring).

    With ``A = x^T x + Lambda`` and ``C = x^T x``, ``V`` = the top-``dim`` eigenvectors of
    ``C^T A^-1 C`` and ``W = A^-1 C V``. ``dim`` above the problem's rank (at most
    min(U, n)) leaves the extra columns zero. The empty bag's vector is ``V^T q``, ``q``
    (n,) the share of users holding each item: the projection of popularity onto the
    item vectors, so a user with no known item is ranked by popularity as the fit's space
    can hold it. Raises ValueError on a bad setting or a catalogue over
    ``LINEAR_MAX_ITEMS``.
    """
    n_users, n = x.shape
    if n > LINEAR_MAX_ITEMS:
        raise ValueError(
            f"the linear tower's closed-form fit needs a dense {n:,} x {n:,} solve; "
            f"{n:,} items is over its limit of {LINEAR_MAX_ITEMS:,}: use kind 'mlp'"
        )
    if l2 <= 0:
        raise ValueError(f"linear_l2 must be > 0 (it keeps the solve well posed), got {l2}")
    if not 0 <= dropout < 1:
        raise ValueError(f"linear_dropout must be in [0, 1), got {dropout}")
    if dim < 1:
        raise ValueError(f"the rank must be >= 1, got {dim}")
    started = time.perf_counter()
    a = np.asarray((x.T @ x).toarray(), dtype=np.float64)
    k = min(dim, n, n_users)
    # C = x^T x is A before its penalty: keep a copy only on the (n, n) eigen path.
    cross = a.copy() if n_users >= n else None
    a[np.diag_indices(n)] += l2 + dropout / (1.0 - dropout) * a.diagonal()
    chol = sla.cho_factor(a, lower=False, overwrite_a=True, check_finite=False)
    if cross is None:
        v = _top_eigvecs_through_users(x, chol, k)
    else:
        k_mat = cross.T @ sla.cho_solve(chol, cross, check_finite=False)
        del cross
        _, vecs = sla.eigh((k_mat + k_mat.T) / 2.0, subset_by_index=[n - k, n - 1],
                           check_finite=False)  # fmt: skip
        v = vecs[:, ::-1]
    # C V through the sparse bags: no second dense (n, n) matrix.
    w = sla.cho_solve(chol, x.T @ (x @ v), check_finite=False)  # (n, k)
    share = np.asarray(x.sum(axis=0)).ravel() / max(n_users, 1)
    w_full, v_full = np.zeros((n + 1, dim)), np.zeros((n, dim))
    w_full[:n, :k], w_full[n, :k], v_full[:, :k] = w, v.T @ share, v
    loss = _reconstruction_error(x, w_full[:n], v_full)
    seconds = time.perf_counter() - started
    log.info(
        "linear fit: %d users x %d items, rank %d, l2=%g, dropout=%g in %.2f s",
        n_users, n, k, l2, dropout, seconds,
    )  # fmt: skip
    return LinearFit(w_full, v_full, loss, seconds)


def _top_eigvecs_through_users(
    x: sp.csr_array, chol: tuple[npt.NDArray[np.float64], bool], k: int
) -> npt.NDArray[np.float64]:
    """Top-k eigenvectors of ``C^T A^-1 C`` (``C = x^T x``) through a ``(U, U)``
    eigenproblem: with ``x^T = Q R`` (thin QR), ``C^T A^-1 C = Q (R Z R^T) Q^T`` and
    ``Z = x A^-1 x^T``."""
    dense_t = x.T.toarray()  # (n, U)
    q, r = np.linalg.qr(dense_t)  # (n, U), (U, U)
    z = dense_t.T @ sla.cho_solve(chol, dense_t, check_finite=False)
    del dense_t
    small = r @ z @ r.T
    m = small.shape[0]
    _, vecs = sla.eigh((small + small.T) / 2.0, subset_by_index=[m - k, m - 1],
                       check_finite=False)  # fmt: skip
    return np.asarray(q @ vecs[:, ::-1])


def _reconstruction_error(
    x: sp.csr_array, w: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
) -> float:
    """Mean over users of ``||x - x W V^T||^2``, in blocks of users so the dense residual
    stays bounded."""
    n_users = x.shape[0]
    total = 0.0
    for s in range(0, n_users, _ERROR_BLOCK):
        block = x[s : s + _ERROR_BLOCK]
        residual = block.toarray() - (block @ w) @ v.T
        total += float(np.square(residual).sum())
    return total / max(n_users, 1)


def fit_content_map(
    v: npt.NDArray[np.float64],
    category_rows: npt.NDArray[np.int64],
    content: npt.NDArray[np.float32],
    n_categories: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Ridge map from an item's category (one-hot over rows 0..n_categories) and
    standardised ``(n, C)`` content to its ``(n, k)`` vector ``v``.

    Returns (category rows ``(n_categories + 1, k)``, content weight ``(C, k)``,
    intercept ``(k,)``). The intercept is not penalised (the data are centred first).
    """
    n = len(v)
    onehot = np.zeros((n, n_categories + 1))
    onehot[np.arange(n), category_rows] = 1.0
    feats = np.hstack([onehot, content.astype(np.float64)])
    mean_f, mean_v = feats.mean(axis=0), v.mean(axis=0)
    fc, vc = feats - mean_f, v - mean_v
    lhs = fc.T @ fc
    lhs[np.diag_indices_from(lhs)] += _CONTENT_RIDGE
    coef = sla.solve(lhs, fc.T @ vc, assume_a="pos", check_finite=False)
    intercept = mean_v - mean_f @ coef
    return coef[: n_categories + 1], coef[n_categories + 1 :], intercept
