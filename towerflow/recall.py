"""Online recall from a published version: user features -> user vector -> top-K items.

A ``Recaller`` holds one version's model, feature tables and index together, so a request
never mixes a model with another version's index.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

from model.features import IdVocab
from model.index import search
from model.towers import TwoTower
from storage import VersionFiles, VersionStore, load_index
from tasks.dataio import ServingTables, load_served_model, read_serving_tables

__all__ = ["Recaller", "Recommendation", "UnknownUserError"]


class UnknownUserError(KeyError):
    """The user ID is not in the version's user table."""


@dataclass(frozen=True)
class Recommendation:
    item_id: int
    score: float
    category: int


@dataclass
class Recaller:
    """One loaded version, ready to answer ``recommend`` calls."""

    version_id: str
    model: TwoTower
    tables: ServingTables
    index: faiss.Index

    @classmethod
    def load(cls, store: VersionStore, version_id: str | None = None) -> Recaller:
        """Load ``version_id`` (default: CURRENT, resolved once) after verifying checksums."""
        version = store.open_current() if version_id is None else store.open_version(version_id)
        return cls(
            version_id=version.version_id,
            model=load_served_model(version.path),
            tables=read_serving_tables(version.path),
            index=load_index(version.file(VersionFiles.INDEX)),
        )

    def recommend(self, user_id: int, k: int) -> list[Recommendation]:
        """Top-``k`` items for a known user, best first (score = cosine similarity)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        pos = int(IdVocab(self.tables.user_id).rows([user_id])[0]) - 1
        if pos < 0:
            raise UnknownUserError(f"user {user_id} is not in version {self.version_id}")
        with torch.inference_mode():
            vec = self.model.forward_user(
                torch.tensor([self.tables.user_id_row[pos]]),
                torch.from_numpy(self.tables.profile[pos : pos + 1].copy()),
            ).numpy()
        scores, ids = search(self.index, vec, min(k, self.index.ntotal))
        found = ids[0] >= 0
        item_pos = np.searchsorted(self.tables.item_id, ids[0][found])
        return [
            Recommendation(int(i), float(s), int(c))
            for i, s, c in zip(
                ids[0][found], scores[0][found], self.tables.category[item_pos], strict=True
            )
        ]
