"""An interaction dataset in memory: ID-sorted user and item tables, interactions as
positions into them, the evaluation splits (temporal, per-user random ratio, per-user
leave-one-out) and the model vocabulary built from the training split. The per-user history
helpers of ``model.history`` are re-exported here next to the splits they read.

Two kinds of index appear in this project and must not be confused:
- a *position* is a row of the full user / item table (every known user or item);
- an *ID row* is a row of a tower's ID embedding: 1..n for users / items seen in the
  training split, 0 (the unknown bucket) for everything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from model.config import TowerConfig, TowerSpec
from model.features import FeatureTables, IdVocab
from model.history import history_at_end, history_before, user_time_order
from model.sets import CsrSets

__all__ = [
    "Dataset",
    "Split",
    "SplitProtocol",
    "Vocabulary",
    "history_at_end",
    "history_before",
    "leave_one_out_split",
    "make_split",
    "random_ratio_split",
    "temporal_split",
]


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
        return cls.from_batches(
            user_id,
            profile,
            item_id,
            category,
            content,
            n_categories,
            [(inter_user_id, inter_item_id, inter_ts)],
            len(inter_ts),
        )

    @classmethod
    def from_batches(
        cls,
        user_id: npt.NDArray[np.int64],
        profile: npt.NDArray[np.float32],
        item_id: npt.NDArray[np.int64],
        category: npt.NDArray[np.int32],
        content: npt.NDArray[np.float32],
        n_categories: int,
        interactions: Iterable[tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike]],
        n_interactions: int,
    ) -> Dataset:
        """``from_raw`` with the interactions arriving in batches of (user IDs, item IDs,
        unix seconds), ``n_interactions`` rows in all: each batch is mapped to positions
        straight into the (N,) arrays, so the raw ID columns are never held whole (a
        10M-row log costs its 240 MB of positions and times, plus one batch).

        Raises ValueError naming the first interaction whose user or item is not in the
        tables, or when the batches hold more or fewer rows than ``n_interactions``.
        """
        users, items = IdVocab.from_ids(user_id), IdVocab.from_ids(item_id)
        u_order, i_order = users.order(user_id), items.order(item_id)
        inter_user = np.empty(n_interactions, np.int64)
        inter_item = np.empty(n_interactions, np.int64)
        inter_ts = np.empty(n_interactions, np.int64)
        at = 0
        for batch_users, batch_items, batch_ts in interactions:
            ts = np.asarray(batch_ts, np.int64)
            end = at + len(ts)
            if end > n_interactions:
                raise ValueError(f"more than the {n_interactions} interactions announced")
            inter_ts[at:end] = ts
            for name, vocab, raw, out in (
                ("user", users, batch_users, inter_user),
                ("item", items, batch_items, inter_item),
            ):
                pos = vocab.rows(raw) - 1
                bad = np.flatnonzero(pos < 0)
                if len(bad):
                    raise ValueError(
                        f"{len(bad)} interactions name an unknown {name} "
                        f"(first: row {at + bad[0]}, {name}_id {np.asarray(raw)[bad[0]]})"
                    )
                out[at:end] = pos
            at = end
        if at != n_interactions:
            raise ValueError(f"{at} interactions, not the {n_interactions} announced")
        return cls(
            user_id=users.ids,
            profile=np.ascontiguousarray(profile[u_order], np.float32),
            item_id=items.ids,
            category=np.ascontiguousarray(category[i_order], np.int32),
            content=np.ascontiguousarray(content[i_order], np.float32),
            n_categories=n_categories,
            inter_user=inter_user,
            inter_item=inter_item,
            inter_ts=inter_ts,
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


SplitProtocol = Literal["temporal", "random_ratio", "leave_one_out"]


@dataclass(frozen=True)
class Split:
    """Train / validation / test masks over the N interactions; each interaction is in
    exactly one of them.

    ``t_val`` / ``t_test`` (unix seconds) are the global cut times of the temporal protocol
    (train < t_val <= validation < t_test <= test); per-user protocols have no global cut
    and leave them None.
    """

    t_val: int | None
    t_test: int | None
    train: npt.NDArray[np.bool_]  # (N,) masks over the interactions
    val: npt.NDArray[np.bool_]
    test: npt.NDArray[np.bool_]
    protocol: SplitProtocol = "temporal"


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


def random_ratio_split(
    user: npt.NDArray[np.int64],
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """Per-user random split (RecBole's ``RS`` with ``group_by: user``).

    Each user's interactions are shuffled (seeded) and cut into train / validation / test
    by ``ratios`` (normalised to sum 1). Counts follow RecBole's ``_calcu_split_ids`` for a
    user with n interactions: validation and test get ``floor(r * n)`` and train the rest;
    then, test first and validation second, a part whose ``r * n`` lies in (0, 1) takes one
    interaction from train while train holds more than one. So with (0.8, 0.1, 0.1):
    n = 1 -> 1/0/0, n = 2 -> 1/0/1, n = 3 -> 1/1/1, n = 5 -> 3/1/1, n = 10 -> 8/1/1,
    n = 25 -> 21/2/2. Shapes: ``user`` (N,) positions; masks (N,).
    """
    r = np.asarray(ratios, np.float64)
    if r.shape != (3,) or not np.all(np.isfinite(r)) or r.min() < 0 or r[0] <= 0 or r[2] <= 0:
        raise ValueError(f"bad split ratios {ratios}: need (train > 0, val >= 0, test > 0)")
    r = r / r.sum()
    users = _check_users(user)
    order = _shuffled_by_user(users, np.random.default_rng(seed))
    rank, count = _rank_in_user(users[order])
    n = count.astype(np.float64)
    n_val, n_test = np.floor(r[1] * n), np.floor(r[2] * n)
    n_train = n - n_val - n_test
    for part, frac in ((n_test, r[2]), (n_val, r[1])):
        bump = (n_train > 1) & (frac * n > 0) & (frac * n < 1)
        part += bump
        n_train -= bump
    label = np.where(rank < n_train, 0, np.where(rank < n_train + n_val, 1, 2))
    return _from_labels(label, order, "random_ratio")


def leave_one_out_split(
    user: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], seed: int = 0
) -> Split:
    """Per-user split by time: each user's latest interaction -> test, second latest ->
    validation, the rest -> train; users with fewer than 3 interactions stay in train.

    Interactions of one user at the same timestamp are ordered by a random permutation
    drawn from ``seed`` (deterministic, and independent of how the input happens to be
    sorted). Shapes: ``user``, ``ts`` (N,); masks (N,).
    """
    users = _check_users(user)
    times = np.asarray(ts, np.int64)
    if times.shape != users.shape:
        raise ValueError(f"user and ts must have the same shape, got {users.shape}, {times.shape}")
    # Sorting a random permutation stably by (user, time) breaks ties at random.
    perm = np.random.default_rng(seed).permutation(len(users))
    order = perm[user_time_order(users[perm], times[perm])]
    rank, count = _rank_in_user(users[order])
    from_end = count - rank  # 1 = the user's latest interaction
    label = np.where(count < 3, 0, np.where(from_end == 1, 2, np.where(from_end == 2, 1, 0)))
    return _from_labels(label, order, "leave_one_out")


def make_split(
    protocol: SplitProtocol,
    user: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    *,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """The split of one evaluation protocol; ``val_frac`` / ``test_frac`` apply to
    "temporal", ``ratios`` to "random_ratio", ``seed`` to both per-user protocols."""
    if protocol == "temporal":
        return temporal_split(ts, val_frac, test_frac)
    if protocol == "random_ratio":
        return random_ratio_split(user, ratios, seed)
    if protocol == "leave_one_out":
        return leave_one_out_split(user, ts, seed)
    raise ValueError(
        f"unknown split protocol {protocol!r}: expected temporal, random_ratio or leave_one_out"
    )


def _check_users(user: npt.ArrayLike) -> npt.NDArray[np.int64]:
    users = np.asarray(user)
    if users.ndim != 1 or (users.size and not np.issubdtype(users.dtype, np.integer)):
        raise ValueError(f"user must be a 1-D integer array, got {users.dtype} {users.shape}")
    if len(users) == 0:
        raise ValueError("cannot split zero interactions")
    return users.astype(np.int64, copy=False)


def _shuffled_by_user(
    users: npt.NDArray[np.int64], rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    # A global shuffle then a stable sort by user: each user's run is a random permutation.
    perm = rng.permutation(len(users))
    return perm[np.argsort(users[perm], kind="stable")]


def _rank_in_user(
    sorted_users: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(N,) user positions sorted ascending -> (rank within the user's run, run length)."""
    n = len(sorted_users)
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    lengths = np.diff(np.r_[starts, n])
    rank = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
    return rank, np.repeat(lengths, lengths)


def _from_labels(
    sorted_label: npt.NDArray[np.int64], order: npt.NDArray[np.int64], protocol: SplitProtocol
) -> Split:
    label = np.empty(len(order), np.int64)
    label[order] = sorted_label
    return Split(None, None, label == 0, label == 1, label == 2, protocol)


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
