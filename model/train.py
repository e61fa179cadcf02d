"""The training loop: seeded, batched by slicing tensors, one optimiser per parameter kind.

Batches are index slices of a per-epoch permutation (no per-sample DataLoader, which costs
~50% of SparseAdam throughput here). ID tables train with SparseAdam, the MLPs with Adam.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from model.config import TowerSpec, TrainConfig
from model.features import FeatureTables
from model.losses import bce_loss, in_batch_softmax_loss, log_sampling_probability
from model.towers import TwoTower

__all__ = ["EpochStats", "TrainResult", "init_model", "resolve_device", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    """One epoch's figures: mean loss, wall seconds and throughput (examples / s)."""

    epoch: int
    loss: float
    seconds: float
    examples_per_s: float


@dataclass
class TrainResult:
    """Per-epoch history and the device actually used."""

    device: str
    epochs: list[EpochStats] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.epochs[-1].loss if self.epochs else math.nan


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


def init_model(spec: TowerSpec, seed: int) -> TwoTower:
    """A freshly initialised model; the seed fixes the initial weights, global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TwoTower(spec)


def _dropout_ids(rows: Tensor, p: float, gen: torch.Generator) -> Tensor:
    if p <= 0:
        return rows
    drop = torch.rand(rows.shape, generator=gen, device=rows.device) < p
    return rows.masked_fill(drop, 0)


def train(
    model: TwoTower,
    tables: FeatureTables,
    user_rows: npt.NDArray[np.int64],
    item_rows: npt.NDArray[np.int64],
    cfg: TrainConfig,
    labels: npt.NDArray[np.float32] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place.

    Args:
        model: the two-tower model (its feature scaling should already be fitted).
        tables: row-indexed user/item features.
        user_rows, item_rows: (N,) int64 vocabulary rows (>= 1) of each training example:
            positives for ``softmax``; impressions for ``bce``.
        cfg: loss, epochs, batch size, learning rates, temperature, seed, device.
        labels: (N,) float32 click labels, required for ``bce``.
        on_epoch: called after every epoch (progress reporting).
    """
    if len(user_rows) != len(item_rows):
        raise ValueError(f"user_rows ({len(user_rows)}) and item_rows ({len(item_rows)}) differ")
    if len(user_rows) < 2:
        raise ValueError(f"need at least 2 training examples, got {len(user_rows)}")
    if cfg.loss == "bce" and (labels is None or len(labels) != len(user_rows)):
        raise ValueError("loss 'bce' needs one label per example")

    device = resolve_device(cfg.device)
    # Guard against denormal floats in the backward pass (they slowed steps ~5x here).
    # Process-wide and left on: flushing denormals to zero is harmless for this workload.
    torch.set_flush_denormal(True)
    model.to(device).train()
    tables = tables.to(device)
    users = torch.as_tensor(user_rows, dtype=torch.int64, device=device)
    items = torch.as_tensor(item_rows, dtype=torch.int64, device=device)
    y = None if labels is None else torch.as_tensor(labels, dtype=torch.float32, device=device)

    log_q: Tensor | None = None
    if cfg.loss == "softmax" and cfg.logq_correction:
        counts = torch.bincount(items, minlength=model.spec.n_items + 1)
        log_q = log_sampling_probability(counts).to(device)
    bias = torch.zeros((), device=device, requires_grad=cfg.loss == "bce")

    dense = [*model.dense_parameters(), *([bias] if cfg.loss == "bce" else [])]
    optimisers: list[torch.optim.Optimizer] = [
        torch.optim.SparseAdam(model.sparse_parameters(), lr=cfg.sparse_lr),
        torch.optim.Adam(dense, lr=cfg.lr),
    ]
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    result = TrainResult(device=str(device))
    n = len(users)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        perm = torch.randperm(n, generator=gen, device=device)
        total, steps = 0.0, 0
        for lo in range(0, n, cfg.batch_size):
            idx = perm[lo : lo + cfg.batch_size]
            if len(idx) < 2:
                continue  # a softmax over one example has no negatives
            u, i = users[idx], items[idx]
            u_vec = model.forward_user(_dropout_ids(u, cfg.id_dropout, gen), tables.user_profile[u])
            i_vec = model.forward_item(
                _dropout_ids(i, cfg.id_dropout, gen),
                tables.item_category_rows[i],
                tables.item_content[i],
            )
            if cfg.loss == "softmax":
                loss = in_batch_softmax_loss(
                    u_vec, i_vec, i, cfg.temperature, None if log_q is None else log_q[i]
                )
            else:
                assert y is not None
                loss = bce_loss(u_vec, i_vec, y[idx], cfg.temperature, bias)
            for opt in optimisers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimisers:
                opt.step()
            total += float(loss.detach())
            steps += 1
        seconds = time.perf_counter() - start
        stats = EpochStats(epoch, total / max(steps, 1), seconds, n / max(seconds, 1e-9))
        result.epochs.append(stats)
        log.info(
            "epoch %d/%d loss %.4f (%.1f s, %.0f ex/s)",
            epoch,
            cfg.epochs,
            stats.loss,
            seconds,
            stats.examples_per_s,
        )
        if on_epoch is not None:
            on_epoch(stats)
    model.eval()
    return result
