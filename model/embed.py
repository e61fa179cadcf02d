"""Batched inference of the towers under ``torch.inference_mode``."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from model.towers import TwoTower

__all__ = ["embed_items", "embed_users"]


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
    device = next(model.parameters()).device
    out = np.empty((len(id_rows), model.spec.tower.embedding_dim), np.float32)
    model.eval()
    with torch.inference_mode():
        for lo in range(0, len(id_rows), batch_size):
            hi = lo + batch_size
            vec = model.forward_item(
                torch.as_tensor(id_rows[lo:hi], dtype=torch.int64, device=device),
                torch.as_tensor(category_rows[lo:hi], dtype=torch.int64, device=device),
                torch.as_tensor(content[lo:hi], dtype=torch.float32, device=device),
            )
            out[lo:hi] = vec.cpu().numpy()
    return out


def embed_users(
    model: TwoTower,
    id_rows: npt.NDArray[np.int64],
    profile: npt.NDArray[np.float32],
    batch_size: int = 8192,
) -> npt.NDArray[np.float32]:
    """User vectors for (U,) ID rows (0 = unknown) and (U, P) profiles -> (U, D) float32."""
    device = next(model.parameters()).device
    out = np.empty((len(id_rows), model.spec.tower.embedding_dim), np.float32)
    model.eval()
    with torch.inference_mode():
        for lo in range(0, len(id_rows), batch_size):
            hi = lo + batch_size
            vec = model.forward_user(
                torch.as_tensor(id_rows[lo:hi], dtype=torch.int64, device=device),
                torch.as_tensor(profile[lo:hi], dtype=torch.float32, device=device),
            )
            out[lo:hi] = vec.cpu().numpy()
    return out
