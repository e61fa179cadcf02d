"""A version's user tables as the user tower takes them, per request: one row wrapped
with ``torch.from_numpy``, no copies (``core.recall``'s hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.versionio import ServingTables
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
    recent: npt.NDArray[np.int64] | None  # (U, H) item rows; None without the history feature
    unknown_row: torch.Tensor  # (1,) int64 UNKNOWN_ROW
    no_history: torch.Tensor | None  # (1, H) int64 zeros: unknown users' history

    @classmethod
    def of(cls, tables: ServingTables) -> UserRows:
        recent = None if tables.recent is None else _torch_ready(tables.recent, np.int64)
        return cls(
            _torch_ready(tables.user_id_row, np.int64),
            _torch_ready(tables.profile, np.float32),
            recent,
            torch.full((1,), UNKNOWN_ROW, dtype=torch.int64),
            None if recent is None else torch.zeros((1, recent.shape[1]), dtype=torch.int64),
        )

    def id_rows(self, pos: int) -> torch.Tensor:
        """(1,) int64 tower ID row of the user at ``pos`` (-1: the unknown row)."""
        return torch.from_numpy(self.id_row[pos : pos + 1]) if pos >= 0 else self.unknown_row

    def profiles(self, pos: int) -> torch.Tensor:
        """(1, P) float32 stored profile of the user at ``pos`` (>= 0)."""
        return torch.from_numpy(self.profile[pos : pos + 1])

    def history(self, pos: int) -> torch.Tensor | None:
        """(1, H) int64 latest item rows of the user at ``pos`` (-1: unknown, zeros); None
        when the model has no history feature."""
        if self.recent is None:
            return None
        return torch.from_numpy(self.recent[pos : pos + 1]) if pos >= 0 else self.no_history
