"""In-memory feature tables and the raw-ID -> embedding-row vocabulary.

Raw IDs (whatever the data uses) never reach the towers: ``IdVocab`` maps them to rows
1..n, and row 0 is the unknown bucket. Feature tables are indexed by the same rows, with
a zero row 0, so a batch gathers its features with one ``index_select``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

__all__ = ["FeatureTables", "IdVocab", "Standardise", "category_rows"]


@dataclass(frozen=True)
class IdVocab:
    """Sorted unique raw IDs; ``rows`` maps raw IDs to 1-based rows, unknown -> 0."""

    ids: npt.NDArray[np.int64]  # (n,) strictly increasing

    @classmethod
    def from_ids(cls, ids: npt.ArrayLike) -> IdVocab:
        arr = np.asarray(ids, dtype=np.int64)
        uniq = np.unique(arr)
        if len(uniq) != len(arr):
            raise ValueError(f"IdVocab: {len(arr) - len(uniq)} duplicate IDs in the vocabulary")
        return cls(uniq)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, raw: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """(n,) raw IDs -> (n,) rows in [0, len]; 0 where the ID is not in the vocabulary."""
        raw_arr = np.asarray(raw, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(raw_arr.shape, np.int64)
        pos = np.searchsorted(self.ids, raw_arr)
        pos_c = np.minimum(pos, len(self.ids) - 1)
        found = self.ids[pos_c] == raw_arr
        return np.where(found, pos_c + 1, 0).astype(np.int64)

    def order(self, raw: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Permutation that sorts a table whose ID column is ``raw`` into vocabulary order."""
        return np.argsort(np.asarray(raw, dtype=np.int64), kind="stable")


def category_rows(category: npt.ArrayLike, n_categories: int) -> npt.NDArray[np.int64]:
    """Category index (0..n-1) -> embedding row (1..n); out-of-range or negative -> 0."""
    cat = np.asarray(category, dtype=np.int64)
    return np.where((cat >= 0) & (cat < n_categories), cat + 1, 0)


@dataclass(frozen=True)
class FeatureTables:
    """Row-indexed features; row 0 is the unknown bucket and holds zeros.

    Shapes: U known users, I known items, P profile floats, C content floats.
    """

    user_profile: Tensor  # (U+1, P) float32
    item_category_rows: Tensor  # (I+1,) int64
    item_content: Tensor  # (I+1, C) float32

    @classmethod
    def build(
        cls,
        profile: npt.NDArray[np.float32],
        category: npt.NDArray[np.int32],
        content: npt.NDArray[np.float32],
        n_categories: int,
    ) -> FeatureTables:
        """Tables from vocabulary-ordered arrays: profile (U, P), category (I,), content (I, C)."""
        prof = np.zeros((len(profile) + 1, profile.shape[1]), np.float32)
        prof[1:] = profile
        cats = np.zeros(len(category) + 1, np.int64)
        cats[1:] = category_rows(category, n_categories)
        cont = np.zeros((len(content) + 1, content.shape[1]), np.float32)
        cont[1:] = content
        return cls(torch.from_numpy(prof), torch.from_numpy(cats), torch.from_numpy(cont))

    def to(self, device: torch.device) -> FeatureTables:
        return FeatureTables(
            self.user_profile.to(device),
            self.item_category_rows.to(device),
            self.item_content.to(device),
        )


class Standardise(nn.Module):
    """Feature scaling fitted on training data; stored as buffers so it ships in state_dict."""

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: Tensor) -> None:
        """x: (n, dim) float32 training features."""
        if x.numel() == 0:
            return
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(x.std(dim=0, unbiased=False).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std
