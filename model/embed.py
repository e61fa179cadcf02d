"""Batched inference of the towers under ``torch.inference_mode``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from model.towers import TwoTower

__all__ = ["embed_items", "embed_users"]


def _batched(
    model: TwoTower, n: int, batch_size: int, forward: Callable[[slice, torch.device], Tensor]
) -> npt.NDArray[np.float32]:
    """Run ``forward(rows, device)`` over row slices of ``batch_size``; (n, D) float32."""
    device = next(model.parameters()).device
    out = np.empty((n, model.spec.tower.embedding_dim), np.float32)
    model.eval()
    with torch.inference_mode():
        for lo in range(0, n, batch_size):
            rows = slice(lo, lo + batch_size)
            out[rows] = forward(rows, device).cpu().numpy()
    return out


def embed_items(
    model: TwoTower,
    id_rows: npt.NDArray[np.int64],
    category_rows: npt.NDArray[np.int64],
    content: npt.NDArray[np.float32],
    batch_size: int = 8192,
) -> npt.NDArray[np.float32]:
    """Item vectors for (I,) ID rows (0 = unknown), (I,) category rows, (I, C) content.

    Returns (I, D) float32, L2-normalised, in input order. Runs on the model's device.
    """
    return _batched(
        model,
        len(id_rows),
        batch_size,
        lambda rows, device: model.forward_item(
            torch.as_tensor(id_rows[rows], dtype=torch.int64, device=device),
            torch.as_tensor(category_rows[rows], dtype=torch.int64, device=device),
            torch.as_tensor(content[rows], dtype=torch.float32, device=device),
        ),
    )


def embed_users(
    model: TwoTower,
    id_rows: npt.NDArray[np.int64],
    profile: npt.NDArray[np.float32],
    history: npt.NDArray[np.int64] | None = None,
    batch_size: int = 8192,
) -> npt.NDArray[np.float32]:
    """User vectors for (U,) ID rows (0 = unknown), (U, P) profiles and, for a model with
    the history feature, (U, H) item rows of each user's recent items (0 = none).

    Returns (U, D) float32 in input order.
    """
    return _batched(
        model,
        len(id_rows),
        batch_size,
        lambda rows, device: model.forward_user(
            torch.as_tensor(id_rows[rows], dtype=torch.int64, device=device),
            torch.as_tensor(profile[rows], dtype=torch.float32, device=device),
            None
            if history is None
            else torch.as_tensor(history[rows], dtype=torch.int64, device=device),
        ),
    )
