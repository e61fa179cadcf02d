"""A version's user tables as the user tower takes them, per request: one row wrapped
with ``torch.from_numpy``, no copies (``core.recall``'s hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.versionio import ServingTables
from model.history import RaggedRows
from model.towers import UNKNOWN_ROW

__all__ = ["UserRows"]


def _torch_ready(a: npt.NDArray[Any], dtype: type[np.generic]) -> npt.NDArray[Any]:
    """``a`` itself when C-contiguous, writable (torch.from_numpy warns on read-only
    arrays) and of ``dtype``, else such a copy."""
    a = np.ascontiguousarray(a, dtype)
    return a if a.flags.writeable else a.copy()


@dataclass(frozen=True)
class UserRows:
    """The user tables as the tower takes them, checked once, so a request wraps one row
    with ``torch.from_numpy`` (~1.5 us) instead of building ``torch.tensor([row])`` and
    copying the profile (~4 us). The tower only reads its inputs, so requests and threads
    share the memory."""

    id_row: npt.NDArray[np.int64]  # (U,) tower ID rows
    profile: npt.NDArray[np.float32]  # (U, P)
    # Ragged item rows per user (most recent first); None without the history feature.
    recent: RaggedRows | None
    unknown_row: torch.Tensor  # (1,) int64 UNKNOWN_ROW
    no_history: torch.Tensor  # (1, 1) int64 zero: the history of an unknown user or none

    @classmethod
    def of(cls, tables: ServingTables) -> UserRows:
        recent = tables.recent
        if recent is not None:
            recent = RaggedRows(recent.indptr, _torch_ready(recent.values, np.int64))
        return cls(
            _torch_ready(tables.user_id_row, np.int64),
            _torch_ready(tables.profile, np.float32),
            recent,
            torch.full((1,), UNKNOWN_ROW, dtype=torch.int64),
            torch.zeros((1, 1), dtype=torch.int64),
        )

    def id_rows(self, pos: int) -> torch.Tensor:
        """(1,) int64 tower ID row of the user at ``pos`` (-1: the unknown row)."""
        return torch.from_numpy(self.id_row[pos : pos + 1]) if pos >= 0 else self.unknown_row

    def profiles(self, pos: int) -> torch.Tensor:
        """(1, P) float32 stored profile of the user at ``pos`` (>= 0)."""
        return torch.from_numpy(self.profile[pos : pos + 1])

    def history(self, pos: int) -> torch.Tensor | None:
        """(1, n) int64 latest item rows of the user at ``pos``, a view of that user's own
        n items (-1: unknown user, or no items: one 0, the padding row); None when the
        model has no history feature. Both towers that read it ignore row 0, so the width
        does not change the vector."""
        if self.recent is None:
            return None
        row = self.recent.row(pos) if pos >= 0 else self.recent.values[:0]
        return torch.from_numpy(row).unsqueeze(0) if len(row) else self.no_history
