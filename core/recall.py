"""Online recall from a published version: user features -> user vector -> top-K items.

A ``Recaller`` is one version's model, feature tables, index and interaction history
loaded and checked together; it is immutable, so a server can swap versions with one
reference assignment and a request never mixes a model with another version's index.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Final

import faiss
import numpy as np
import numpy.typing as npt
import torch

from core.catalogue_apply import read_overlay
from core.delta_apply import ServedItems, apply_chain
from core.deltas import Chain, resolve_chain, verify_chain
from core.filtering import (
    EMPTY_IDS,
    FilteredSearch,
    FilterMode,
    ItemCatalogue,
    index_ids,
)
from core.recall_types import (
    InvalidRequestError,
    RecallError,
    RecallResult,
    Recommendation,
    UnknownUserError,
    VersionRejectedError,
)
from core.recall_users import UserRows
from core.versionio import (
    History,
    RawIds,
    ServingTables,
    load_served_model,
    read_history,
    read_raw_ids,
    read_serving_tables,
)
from model.ids import isin_sorted
from model.incremental import Overlay
from model.towers import TwoTower
from storage import CorruptVersionError, Manifest, VersionFiles, VersionStore, load_index
from storage.integrity import FileIdentity, file_identities

__all__ = [
    "FilterMode",
    "InvalidRequestError",
    "RecallError",
    "RecallResult",
    "Recaller",
    "Recommendation",
    "UnknownUserError",
    "VersionRejectedError",
]

log = logging.getLogger(__name__)


_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# Bounds of a user vector's squared norm, relative to the model's (1, or 2 with the
# item-bias slot): |v| within 1 -+ 1e-3 of what the tower emits.
_UNIT_SQ_LOW: Final = (1.0 - 1e-3) ** 2
_UNIT_SQ_HIGH: Final = (1.0 + 1e-3) ** 2


def _usable(vec: npt.NDArray[np.float32], norm_sq: float | None) -> bool:
    """Whether a (1, D) user vector can rank items: its squared norm within (1 -+ 1e-3)^2
    of the model's (``norm_sq``), or for an unnormalised (linear) model, finite."""
    sq = float(np.vdot(vec, vec))
    if norm_sq is None:
        return math.isfinite(sq)
    return _UNIT_SQ_LOW < sq / norm_sq < _UNIT_SQ_HIGH


def _is_int(x: object) -> bool:
    # `type(x) is int` answers the common case in ~30 ns; bool's type is bool, not int.
    return type(x) is int or (isinstance(x, int | np.integer) and not isinstance(x, bool))


def _identities(chain: Chain) -> dict[tuple[str, str], FileIdentity]:
    """The identity of every file of every version of ``chain``, by (version, file)."""
    return {
        (v.version_id, name): identity
        for v in chain.versions
        for name, identity in file_identities(
            v.path, [*v.manifest.files, VersionFiles.MANIFEST]
        ).items()
    }


@dataclass(frozen=True)
class Recaller:
    """One loaded version, ready to answer ``recall`` / ``recommend`` from many threads.

    ``filter_mode`` chooses how seen items and category filters are applied: Faiss
    search-time ID selectors ("selector"), over-fetching then filtering ("overfetch"), or
    "auto": over-fetch when only a few IDs are blocked (one search of k + blocked is then
    exact and ~20% faster), selectors otherwise (category filters: up to 5x faster and a
    flat p99). All are exact; bench/loadgen.py measures them.
    """

    version_id: str
    model: TwoTower
    tables: ServingTables
    index: faiss.Index
    history: History
    # What search corrects in an index without remove_ids (empty for the others): retired
    # IDs it still holds (tombstones), and updated items' current vectors searched beside it.
    overlay: Overlay
    manifest: Manifest | None = None
    raw_ids: RawIds | None = None  # imported data with non-integer raw IDs
    filter_mode: FilterMode = "auto"
    _catalogue: ItemCatalogue = field(init=False, repr=False, compare=False)
    _searcher: FilteredSearch = field(init=False, repr=False, compare=False)
    _users: UserRows = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        overlay = self.overlay
        object.__setattr__(
            self,
            "_catalogue",
            ItemCatalogue(
                self.tables.item_id, self.tables.category, overlay.tombstones, overlay.fresh_ids
            ),
        )
        object.__setattr__(
            self,
            "_searcher",
            FilteredSearch(self.index, self.filter_mode, overlay.fresh_vectors, overlay.fresh_ids),
        )
        object.__setattr__(self, "_users", UserRows.of(self.tables))

    @classmethod
    def load(
        cls, store: VersionStore, version_id: str | None = None, *, verify: bool = True
    ) -> Recaller:
        """Load ``version_id`` (default: CURRENT, resolved once) after verifying checksums,
        then check that its parts fit together (see ``check``).

        Raises ``CorruptVersionError`` / ``NoCurrentVersionError`` / ``VersionNotFoundError``
        from storage, or ``VersionRejectedError`` naming the first inconsistency.
        """
        version = (
            store.open_current(verify=False)
            if version_id is None
            else store.open_version(version_id, verify=False)
        )
        vid = version.version_id
        # A delta is read on top of its chain: the complete version under it, then each
        # delta in order (core.deltas).
        chain = resolve_chain(store, version)
        # Each file's identity (inode, size, mtime) before the checksums and again after
        # loading: bytes rewritten in place, truncated, deleted or replaced after they were
        # checked (by a stray process, say) are never served as the checked ones.
        before = _identities(chain)
        if verify:
            chain = verify_chain(store, chain)
        base = chain.base
        try:
            model = load_served_model(base.path)
            index = load_index(base.file(VersionFiles.INDEX))
            items = ServedItems(
                read_serving_tables(base.path, model.history_len),
                index,
                read_overlay(base.path, int(index.d)),
            )
            items = apply_chain(items, chain)
            recaller = cls(
                version_id=vid,
                model=model,
                tables=items.tables,
                index=items.index,
                history=read_history(base.path),
                manifest=chain.head.manifest,
                raw_ids=read_raw_ids(base.path),
                overlay=items.overlay,
            )
        except (KeyError, ValueError, RuntimeError, OSError) as e:
            # Strict state_dict load, schema checks and Faiss read errors all land here.
            raise VersionRejectedError(vid, f"cannot load: {e}") from e
        if verify:
            after = _identities(chain)
            if changed := sorted(n for n in before if after.get(n) != before[n]):
                at, name = changed[0]
                raise CorruptVersionError(at, name, "changed on disk while being loaded")
        recaller.check()
        return recaller

    @property
    def tombstones(self) -> npt.NDArray[np.int64]:
        """(T,) sorted retired IDs the index still holds."""
        return self.overlay.tombstones

    def check(self) -> None:
        """Sanity checks run before a version may serve; raises ``VersionRejectedError``.

        Index size == items table (+ tombstones) == manifest item count (+ tombstones);
        index dim == model embedding dim == manifest; profiles fit the user tower; the
        index holds the table's item IDs and the tombstones; fresh vectors are of served
        items, finite, of the index's dimension; probe queries (plain and filtered) return
        k finite results.
        """
        n, d, m = self.n_items, self.model.dim, self.manifest
        m_items, m_dim = (m.item_count, m.embedding_dim) if m is not None else (n, d)
        held, n_tomb = index_ids(self.index), len(self.tombstones)
        expected_ids = np.union1d(self.tables.item_id, self.tombstones) if n_tomb else None
        problems = [
            message
            for bad, message in (
                (
                    self.index.ntotal != n + n_tomb,
                    f"index ntotal {self.index.ntotal} != {n} items + {n_tomb} tombstones",
                ),
                (m_items != n, f"manifest item_count {m_items} != {n} items"),
                (self.index.d != d, f"index dim {self.index.d} != model embedding dim {d}"),
                (m_dim != d, f"manifest embedding_dim {m_dim} != model embedding dim {d}"),
                (
                    self.tables.profile.shape[1] != self.profile_dim,
                    f"profiles have {self.tables.profile.shape[1]} values, the user tower "
                    f"takes {self.profile_dim}",
                ),
                (n == 0 or len(self.tables.user_id) == 0, "no items or no users"),
                *self._overlay_problems(),
                (
                    held is not None
                    and not np.array_equal(
                        np.sort(held), self.tables.item_id if expected_ids is None else expected_ids
                    ),
                    "the index's item IDs differ from the items table (and tombstones)",
                ),
            )
            if bad
        ]
        if problems:
            raise VersionRejectedError(self.version_id, "; ".join(problems))
        user, k = int(self.tables.user_id[0]), min(10, n)
        for exclude_seen in (False, True):
            try:
                probe = self.recall(user, k=k, exclude_seen=exclude_seen).items
            except (RecallError, RuntimeError, ValueError) as e:
                raise VersionRejectedError(self.version_id, f"probe query failed: {e}") from e
            if len(probe) < min(k, n - len(self.history.items_of(user))) or not all(
                np.isfinite(r.score) for r in probe
            ):
                raise VersionRejectedError(
                    self.version_id, f"probe query returned {len(probe)} of {k} items"
                )

    def _overlay_problems(self) -> list[tuple[bool, str]]:
        fresh, vectors = self.overlay.fresh_ids, self.overlay.fresh_vectors
        return [
            (
                not bool(isin_sorted(fresh, self.tables.item_id).all()),
                "fresh vectors of items the version does not serve",
            ),
            (
                bool(isin_sorted(fresh, self.overlay.tombstones).any()),
                "items both fresh and retired",
            ),
            (
                vectors.shape != (len(fresh), self.index.d),
                f"fresh vectors of shape {vectors.shape}, not ({len(fresh)}, {self.index.d})",
            ),
            (not bool(np.isfinite(vectors).all()), "fresh vectors that are not finite"),
        ]

    @property
    def n_items(self) -> int:
        return len(self.tables.item_id)

    @property
    def profile_dim(self) -> int:
        return int(self.model.spec.profile_dim)

    def stored_user_id(self, raw: str) -> int:
        """The stored int64 ID of a raw (text) user ID: through the version's raw-ID map
        for imported data whose IDs are not integers, else the integer the text spells.

        Raises ``UnknownUserError`` when the map lacks it or the text is no integer.
        """
        if self.raw_ids is not None:
            stored = self.raw_ids.user(raw)
            if stored is None:
                raise UnknownUserError(f"user {raw!r} is not in version {self.version_id}")
            return stored
        try:
            return int(raw)
        except ValueError:
            raise UnknownUserError(
                f"user {raw!r} is not in version {self.version_id} (its user IDs are integers)"
            ) from None

    def recommend(self, user_id: int, k: int) -> list[Recommendation]:
        """Top-``k`` items for a known user, best first, seen items included (the CLI's
        ``recommend``); ``k`` above the catalogue size returns the whole catalogue."""
        if k < 1:
            raise InvalidRequestError(f"k must be >= 1, got {k}")
        if self._user_pos(user_id) < 0:
            raise UnknownUserError(f"user {user_id} is not in version {self.version_id}")
        return self.recall(user_id, k=min(k, self.n_items), exclude_seen=False).items

    def recall(
        self,
        user_id: int | None,
        profile: npt.ArrayLike | None = None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        include_categories: list[int] | None = None,
        exclude_categories: list[int] | None = None,
    ) -> RecallResult:
        """Top-``k`` eligible items for a user, best first.

        Args:
            user_id: raw user ID, or None for an anonymous request.
            profile: live ``(P,)`` profile floats; None = the stored profile (known users).
                A known user with a profile keeps the user's ID row; an unknown or absent
                user is embedded through the unknown bucket (row 0) from the profile alone.
            k: 1..catalogue size.
            exclude_seen: never return items in the user's stored interaction history.
            include_categories: only items of these categories (None = all).
            exclude_categories: never items of these categories (wins over include).

        Returns fewer than ``k`` items only when fewer are eligible. Filtering is exact.
        Raises ``InvalidRequestError`` or ``UnknownUserError``.
        """
        if not _is_int(k):
            raise InvalidRequestError(f"k must be an integer, got {type(k).__name__}")
        k = int(k)  # Faiss's SWIG wrappers reject numpy integers
        n_items = len(self.tables.item_id)
        if not 1 <= k <= n_items:
            raise InvalidRequestError(f"k must be in 1..{n_items} (catalogue size), got {k}")
        id_row, prof, history, pos = self._user_inputs(user_id, profile)
        known = pos >= 0
        with torch.inference_mode():
            vec = self.model.forward_user(id_row, prof, history).numpy()
        # Huge profile values overflow inside the tower: the "unit" vector comes out NaN or
        # zero, which would rank items by noise. |v|^2 within (1 -+ 1e-3)^2 of the model's
        # squared norm; vdot on the (1, D) row is ~1 us cheaper than np.linalg.norm.
        if not _usable(vec, self.model.user_norm_sq):
            raise InvalidRequestError("profile values are out of range: no usable user vector")
        seen = (
            self.history.items_of(int(user_id))
            if exclude_seen and known and user_id is not None
            else EMPTY_IDS
        )
        flt = self._catalogue.filter(seen, include_categories, exclude_categories)
        k_eff = k if flt is None else min(k, flt.total)
        if k_eff == 0:
            return RecallResult(
                self.version_id, EMPTY_IDS, np.empty(0, np.float32), np.empty(0, np.int32), known
            )
        # The tower's output is already a C-contiguous (1, D) float32 array.
        scores, ids = self._searcher.search(vec, k_eff, flt)
        cats = self._catalogue.categories_of(ids)
        return RecallResult(self.version_id, ids, scores, cats, known)

    # -- request pieces -------------------------------------------------------------------

    def _user_pos(self, user_id: int) -> int:
        """Row of ``user_id`` in the users table, or -1 (also for IDs outside int64)."""
        if not _INT64_MIN <= user_id <= _INT64_MAX:
            return -1
        # One scalar binary search: the per-request hot path, no temporary arrays.
        ids = self.tables.user_id
        i = int(ids.searchsorted(user_id))
        return i if i < len(ids) and ids.item(i) == user_id else -1

    def _user_inputs(
        self, user_id: int | None, profile: npt.ArrayLike | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """The tower's inputs: (1,) int64 ID row, (1, P) float32 profile, (1, H) int64
        history or None (see ``UserRows.history``), and the user's row in the users
        table (-1: unknown or anonymous)."""
        if user_id is None:
            pos = -1
        elif _is_int(user_id):
            pos = self._user_pos(int(user_id))
        else:
            raise InvalidRequestError(f"user_id must be an integer, got {type(user_id).__name__}")
        users = self._users
        if profile is None:
            if user_id is None:
                raise InvalidRequestError("give a user_id, a profile, or both")
            if pos < 0:
                raise UnknownUserError(
                    f"user {user_id} is not in version {self.version_id}; send a profile "
                    f"({self.profile_dim} floats) to recall for an unknown user"
                )
            return users.id_rows(pos), users.profiles(pos), users.history(pos), pos
        prof = torch.from_numpy(self._validate_profile(profile))
        return users.id_rows(pos), prof, users.history(pos), pos

    def _validate_profile(self, profile: npt.ArrayLike) -> npt.NDArray[np.float32]:
        try:
            wide = np.asarray(profile, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise InvalidRequestError(f"profile must be a list of numbers: {e}") from None
        if wide.shape != (self.profile_dim,):
            raise InvalidRequestError(
                f"profile must have {self.profile_dim} values, got shape {list(wide.shape)}"
            )
        # Cast first: finite float64 values can still overflow float32 to inf.
        with np.errstate(over="ignore"):
            prof = wide.astype(np.float32).reshape(1, -1)
        if not np.isfinite(prof).all():
            raise InvalidRequestError("profile values must be finite float32 numbers")
        return prof
