"""The synthetic generator's events: their container, the true scores they are drawn
from (in a fixed order, so every machine draws the same), the columns a range of blocks
fills, and the merge of blocks drawn apart into one time-ordered log
(``model.synthetic`` draws them)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "EVENT_DTYPES",
    "IMPRESSION_FIELDS",
    "INTERACTION_FIELDS",
    "EventColumns",
    "EventTable",
    "Events",
    "merge_events",
    "merged_chunks",
    "true_scores",
]


@dataclass(frozen=True)
class Events:
    """Clicks and impressions, raw IDs. Shapes: N interactions, M impressions."""

    inter_user: npt.NDArray[np.int64]  # (N,)
    inter_item: npt.NDArray[np.int64]  # (N,)
    inter_ts: npt.NDArray[np.int64]  # (N,) unix seconds
    imp_user: npt.NDArray[np.int64]  # (M,)
    imp_item: npt.NDArray[np.int64]  # (M,)
    imp_ts: npt.NDArray[np.int64]  # (M,)
    imp_label: npt.NDArray[np.int8]  # (M,) 1 click, 0 shown but not clicked


def true_scores(
    user_latent: npt.NDArray[np.float32],
    item_latent: npt.NDArray[np.float32],
    log_popularity: npt.NDArray[np.float32],
    temperature: float,
    chunk: int = 4096,
) -> npt.NDArray[np.float32]:
    """``oracle_scores`` computed in a fixed order, without BLAS: (B, L) x (N, L) ->
    (B, N) float32, the dot products summed dimension by dimension (elementwise IEEE
    operations, column chunks of ``chunk`` for the cache).

    Why not a matrix product: OpenBLAS rounds sgemm differently with its thread count
    (measured: a 512 x 16 x 50k product hashes differently with 1 and 2 threads), and a
    Dask worker runs BLAS on 1 thread, so near-ties in the Gumbel top-k flipped (10 of
    9.8M interactions at 1M items) and the same snapshot id named different data. About
    4x slower than sgemm (0.07 s against 0.015 s a 512-user block), 11 s at 1M items."""
    n_users, dim = user_latent.shape
    n = len(item_latent)
    vt = np.ascontiguousarray(item_latent.T, dtype=np.float32)
    out = np.empty((n_users, n), np.float32)
    tmp = np.empty((n_users, min(chunk, n)), np.float32)
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        block, t = out[:, c0:c1], tmp[:, : c1 - c0]
        np.multiply(user_latent[:, :1], vt[0, c0:c1], out=block)
        for d in range(1, dim):
            np.multiply(user_latent[:, d : d + 1], vt[d, c0:c1], out=t)
            block += t
    out /= np.float32(temperature)
    out += log_popularity[None, :]
    return out


EVENT_DTYPES: dict[str, type[np.generic]] = {
    "inter_user": np.int64,
    "inter_item": np.int64,
    "inter_ts": np.int64,
    "imp_user": np.int64,
    "imp_item": np.int64,
    "imp_ts": np.int64,
    "imp_label": np.int8,
}


class EventColumns:
    """Columns appended to in place, in arrays grown by doubling when they fill."""

    def __init__(self, capacity: int, dtypes: dict[str, type[np.generic]]) -> None:
        self._data = {name: np.empty(capacity, dt) for name, dt in dtypes.items()}
        self._n = 0

    def append(self, columns: dict[str, npt.NDArray[np.generic]]) -> None:
        m = len(next(iter(columns.values())))
        end = self._n + m
        for name, values in columns.items():
            data = self._data[name]
            if end > len(data):
                grown = np.empty(max(2 * len(data), end), data.dtype)
                grown[: self._n] = data[: self._n]
                self._data[name] = data = grown
            data[self._n : end] = values
        self._n = end

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        """The filled part of each column (views)."""
        return {name: data[: self._n] for name, data in self._data.items()}


INTERACTION_FIELDS = ("inter_user", "inter_item", "inter_ts")
IMPRESSION_FIELDS = ("imp_user", "imp_item", "imp_ts", "imp_label")
EventTable = Literal["interactions", "impressions"]


def merged_chunks(
    parts: Sequence[Events], table: EventTable, chunk_rows: int = 1 << 20
) -> Iterator[dict[str, npt.NDArray[np.generic]]]:
    """One table of the parts (each sorted by ``generate_events``, in block order) as one
    log in time order, in chunks of about ``chunk_rows``: the columns by name (``user``,
    ``item``, ``ts``, and ``label`` for impressions). Equal times keep block order, so the
    log is the same whichever way the blocks were split. Memory: the parts plus a chunk.

    Each chunk is a window of times: every part's rows in it (found by bisection, the
    parts being sorted) joined in part order, then stably sorted."""
    names = INTERACTION_FIELDS if table == "interactions" else IMPRESSION_FIELDS
    ts_name = names[2]
    stamps = [getattr(p, ts_name) for p in parts]
    total = sum(len(t) for t in stamps)
    if total == 0:
        return
    lo = min(int(t[0]) for t in stamps if len(t))
    hi = max(int(t[-1]) for t in stamps if len(t)) + 1
    n_windows = max(1, -(-total // chunk_rows))
    edges = np.unique(np.linspace(lo, hi, n_windows + 1).astype(np.int64))
    edges[-1] = hi
    cuts = [np.searchsorted(t, edges) for t in stamps]
    for w in range(len(edges) - 1):
        spans = [(c[w], c[w + 1]) for c in cuts]
        ts = np.concatenate([t[a:b] for t, (a, b) in zip(stamps, spans, strict=True)])
        if not len(ts):
            continue
        order = np.argsort(ts, kind="stable")
        yield {
            name.split("_", 1)[1]: np.concatenate(
                [getattr(p, name)[a:b] for p, (a, b) in zip(parts, spans, strict=True)]
            )[order]
            for name in names
        }


def merge_events(parts: Sequence[Events]) -> Events:
    """The parts (in block order) as one time-ordered log in memory (``merged_chunks``
    joined): the same log whichever way the blocks were split."""
    if not parts:
        raise ValueError("merge_events needs at least one part")
    out: dict[str, npt.NDArray[np.generic]] = {}
    for table, names in (("interactions", INTERACTION_FIELDS), ("impressions", IMPRESSION_FIELDS)):
        chunks = list(merged_chunks(parts, table))  # type: ignore[arg-type]
        for name in names:
            key = name.split("_", 1)[1]
            dtype = getattr(parts[0], name).dtype
            out[name] = np.concatenate([c[key] for c in chunks]) if chunks else np.empty(0, dtype)
    return Events(**out)  # type: ignore[arg-type]
