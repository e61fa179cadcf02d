"""What a recall request returns and the errors it can raise (``core.recall`` re-exports
them; the HTTP service maps the errors to 4xx answers)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "InvalidRequestError",
    "RecallError",
    "RecallResult",
    "Recommendation",
    "UnknownUserError",
    "VersionRejectedError",
]


class RecallError(Exception):
    """Base of the errors a recall request can cause (the service maps them to 4xx)."""


class InvalidRequestError(RecallError, ValueError):
    """The request cannot be answered as given (bad k, profile, or no user at all)."""


class UnknownUserError(RecallError, KeyError):
    """The user ID is not in the version's user table and no profile was given."""

    def __str__(self) -> str:
        # KeyError quotes its message; this one is read by people.
        return str(self.args[0]) if self.args else ""


class VersionRejectedError(Exception):
    """A version's files verified but do not fit together (index vs model vs tables)."""

    def __init__(self, version_id: str, reason: str) -> None:
        self.version_id = version_id
        self.reason = reason
        super().__init__(f"version {version_id!r} rejected: {reason}")


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its stored ID, score and category."""

    item_id: int
    score: float  # inner product of user and item vectors (cosine + item offset)
    category: int


@dataclass(frozen=True)
class RecallResult:
    """The items of one request, best first, and the version that answered it.

    Kept as arrays: building 100 Python objects per request cost more than the search
    itself on small catalogues; ``items`` builds them on first use.
    """

    version_id: str
    item_ids: npt.NDArray[np.int64]  # (n,) best first
    scores: npt.NDArray[np.float32]  # (n,) inner products (cosine + item offset)
    categories: npt.NDArray[np.int32]  # (n,)
    known_user: bool  # False: embedded through the unknown-ID bucket (row 0)

    @functools.cached_property
    def items(self) -> list[Recommendation]:
        return [
            Recommendation(i, s, c)
            for i, s, c in zip(
                self.item_ids.tolist(),
                self.scores.tolist(),
                self.categories.tolist(),
                strict=True,
            )
        ]
