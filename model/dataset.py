"""An interaction dataset in memory: ID-sorted user and item tables, interactions as
positions into them, the temporal split and the model vocabulary built from it.

Two kinds of index appear in this project and must not be confused:
- a *position* is a row of the full user / item table (every known user or item);
- an *ID row* is a row of a tower's ID embedding: 1..n for users / items seen in the
  training split, 0 (the unknown bucket) for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.config import TowerConfig, TowerSpec
from model.features import FeatureTables, IdVocab
from model.metrics import CsrSets

__all__ = ["Dataset", "Split", "Vocabulary", "temporal_split"]


@dataclass(frozen=True)
class Dataset:
    """Tables sorted by raw ID; interactions refer to them by position.

    Shapes: U users, I items, N interactions, P profile floats, C content floats.
    """

    user_id: npt.NDArray[np.int64]  # (U,) strictly increasing
    profile: npt.NDArray[np.float32]  # (U, P)
    item_id: npt.NDArray[np.int64]  # (I,) strictly increasing
    category: npt.NDArray[np.int32]  # (I,)
    content: npt.NDArray[np.float32]  # (I, C)
    n_categories: int
    inter_user: npt.NDArray[np.int64]  # (N,) user positions
    inter_item: npt.NDArray[np.int64]  # (N,) item positions
    inter_ts: npt.NDArray[np.int64]  # (N,) unix seconds

    @classmethod
    def from_raw(
        cls,
        user_id: npt.NDArray[np.int64],
        profile: npt.NDArray[np.float32],
        item_id: npt.NDArray[np.int64],
        category: npt.NDArray[np.int32],
        content: npt.NDArray[np.float32],
        n_categories: int,
        inter_user_id: npt.NDArray[np.int64],
        inter_item_id: npt.NDArray[np.int64],
        inter_ts: npt.NDArray[np.int64],
    ) -> Dataset:
        """Sort the tables by ID and map interaction IDs to positions.

        Raises ValueError naming the first interaction whose user or item is not in the tables.
        """
        users, items = IdVocab.from_ids(user_id), IdVocab.from_ids(item_id)
        u_order, i_order = users.order(user_id), items.order(item_id)
        u_pos, i_pos = users.rows(inter_user_id) - 1, items.rows(inter_item_id) - 1
        for name, pos, raw in (("user", u_pos, inter_user_id), ("item", i_pos, inter_item_id)):
            bad = np.flatnonzero(pos < 0)
            if len(bad):
                raise ValueError(
                    f"{len(bad)} interactions name an unknown {name} "
                    f"(first: row {bad[0]}, {name}_id {raw[bad[0]]})"
                )
        return cls(
            user_id=users.ids,
            profile=np.ascontiguousarray(profile[u_order], np.float32),
            item_id=items.ids,
            category=np.ascontiguousarray(category[i_order], np.int32),
            content=np.ascontiguousarray(content[i_order], np.float32),
            n_categories=n_categories,
            inter_user=u_pos,
            inter_item=i_pos,
            inter_ts=np.asarray(inter_ts, np.int64),
        )

    @property
    def n_users(self) -> int:
        return len(self.user_id)

    @property
    def n_items(self) -> int:
        return len(self.item_id)

    def user_positions(self, raw_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """(n,) raw user IDs -> (n,) positions, -1 where unknown."""
        return IdVocab(self.user_id).rows(raw_ids) - 1

    def item_positions(self, raw_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """(n,) raw item IDs -> (n,) positions, -1 where unknown."""
        return IdVocab(self.item_id).rows(raw_ids) - 1

    def sets(self, mask: npt.NDArray[np.bool_]) -> CsrSets:
        """Per-user item sets (positions) of the interactions selected by ``mask``."""
        return CsrSets.from_pairs(self.inter_user[mask], self.inter_item[mask], self.n_users)


@dataclass(frozen=True)
class Split:
    """Global temporal split: train < t_val <= validation < t_test <= test (unix seconds)."""

    t_val: int
    t_test: int
    train: npt.NDArray[np.bool_]  # (N,) masks over the interactions
    val: npt.NDArray[np.bool_]
    test: npt.NDArray[np.bool_]


def temporal_split(ts: npt.NDArray[np.int64], val_frac: float, test_frac: float) -> Split:
    """Cut the timeline at the (1 - val - test) and (1 - test) quantiles of ``ts``.

    Every validation interaction is later than every training one, and every test one later
    than both, so no future interaction leaks into training.
    """
    if not (0 <= val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"bad split fractions val={val_frac} test={test_frac}")
    if len(ts) == 0:
        raise ValueError("cannot split zero interactions")
    t_val, t_test = (int(x) for x in np.quantile(ts, [1 - val_frac - test_frac, 1 - test_frac]))
    train = ts < t_val
    test = ts >= t_test
    return Split(t_val, t_test, train, ~train & ~test, test)


@dataclass(frozen=True)
class Vocabulary:
    """ID rows of every user / item position (0 = unknown bucket, i.e. not in training)."""

    user_id_row: npt.NDArray[np.int64]  # (U,)
    item_id_row: npt.NDArray[np.int64]  # (I,)

    @classmethod
    def from_training(cls, data: Dataset, train: npt.NDArray[np.bool_]) -> Vocabulary:
        """Users and items with at least one training interaction get rows 1..n in position
        order; the rest share the unknown bucket."""
        return cls(
            _rows_for(data.inter_user[train], data.n_users),
            _rows_for(data.inter_item[train], data.n_items),
        )

    @property
    def n_users(self) -> int:
        return int(self.user_id_row.max(initial=0))

    @property
    def n_items(self) -> int:
        return int(self.item_id_row.max(initial=0))

    def tower_spec(self, data: Dataset, tower: TowerConfig) -> TowerSpec:
        """The model shape for this vocabulary and the dataset's feature sizes."""
        return TowerSpec(
            tower=tower,
            n_users=self.n_users,
            n_items=self.n_items,
            n_categories=data.n_categories,
            profile_dim=data.profile.shape[1],
            content_dim=data.content.shape[1],
        )

    def feature_tables(self, data: Dataset) -> FeatureTables:
        """Training features indexed by ID row (row 0 zero)."""
        users = np.flatnonzero(self.user_id_row)
        items = np.flatnonzero(self.item_id_row)
        return FeatureTables.build(
            data.profile[users], data.category[items], data.content[items], data.n_categories
        )


def _rows_for(positions: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    seen = np.zeros(n, bool)
    seen[positions] = True
    rows = np.zeros(n, np.int64)
    rows[seen] = np.arange(1, int(seen.sum()) + 1)
    return rows
