"""Batched inference of the towers under ``torch.inference_mode``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from model.side_by_side import run_batches
from model.threadgov import adaptive_loop
from model.towers import TwoTower

__all__ = ["embed_items", "embed_users"]


def _batched(
    model: TwoTower,
    inputs: Sequence[Tensor],
    batch_size: int,
    forward: Callable[..., Tensor],
) -> npt.NDArray[np.float32]:
    """Run ``forward`` over row slices of ``batch_size`` of the CPU ``inputs`` (equal
    lengths n), each moved to the model's device; returns (n, D) float32.

    The loop is a plain inference loop: the inputs are wrapped once and sliced as
    tensors, and each batch is copied (``Tensor.copy_``) into one torch buffer that is
    returned as a numpy view. The earlier np.empty buffer filled by numpy copies was ~10%
    slower at 1M items and erratic: numpy asks for transparent huge pages for large
    arrays, and first-touching 256 MB of them took 0.45-1.3 s here.

    On the CPU, from the first batch at which the thread governor runs under its ceiling
    (the cores are shared), the rest run side by side (``model.side_by_side``): each
    writes its own rows, so the vectors are the same whichever thread computed them.
    """
    device = next(model.parameters()).device
    n = len(inputs[0])
    model.eval()
    cpu = device.type == "cpu"

    def rows(lo: int, hi: int) -> None:
        batch = [t[lo:hi] for t in inputs]
        if not cpu:
            batch = [t.to(device) for t in batch]  # one batch on the device at a time
        out[lo:hi] = forward(*batch)  # copies back to the CPU for a GPU model

    with torch.inference_mode():
        out = torch.empty((n, model.dim), dtype=torch.float32)
        run_batches(rows, n, batch_size, adaptive_loop(cpu), parallel=cpu)  # model.threadgov
    return out.numpy()


def embed_items(
    model: TwoTower,
    id_rows: npt.NDArray[np.int64],
    category_rows: npt.NDArray[np.int64],
    content: npt.NDArray[np.float32],
    batch_size: int = 8192,
) -> npt.NDArray[np.float32]:
    """Item vectors for (I,) ID rows (0 = unknown), (I,) category rows, (I, C) content.

    Returns (I, D) float32 in input order: L2-normalised, or with the item-bias slot unit
    in the first D - 1 dims and the offset in the last. Runs on the model's device.
    """
    # as_tensor shares the arrays' memory when they already have these dtypes.
    inputs = [
        torch.as_tensor(id_rows, dtype=torch.int64),
        torch.as_tensor(category_rows, dtype=torch.int64),
        torch.as_tensor(content, dtype=torch.float32),
    ]
    return _batched(model, inputs, batch_size, model.forward_item)


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
    inputs = [
        torch.as_tensor(id_rows, dtype=torch.int64),
        torch.as_tensor(profile, dtype=torch.float32),
    ]
    if history is not None:
        inputs.append(torch.as_tensor(history, dtype=torch.int64))
    return _batched(model, inputs, batch_size, model.forward_user)
