"""The training loop: seeded, batched by slicing tensors, one optimiser per parameter kind.

Batches are index slices of a per-epoch permutation (no per-sample DataLoader, which costs
~50% of SparseAdam throughput here). ID tables train with SparseAdam, the MLPs with Adam.

With ``TrainConfig.world_size`` > 1 the loop runs in every process of an initialised
``torch.distributed`` group (gloo) under ``DistributedDataParallel``. Every process draws
the same permutation; each step's batch is split by rank (``batch[rank::world]``) and the
gradients are averaged (``model.ddp``), so a step's gradient is the whole batch's mean
gradient apart from the in-batch negatives, which each process takes from its own part.
Starting the processes is the caller's job (``core.distributed``).
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
from torch import Tensor, nn

from model.config import FULL_SOFTMAX_MAX_ITEMS, TowerSpec, TrainConfig
from model.ddp import average_sparse_grads, check_rank, from_rank0, sum_over_ranks, wrap_loss
from model.features import FeatureTables
from model.losses import (
    bce_loss,
    full_softmax_loss,
    log_expected_count,
    log_sampling_probability,
    mixed_softmax_loss,
)
from model.threadgov import adaptive_loop
from model.towers import ItemTower, TwoTower, UserTower

__all__ = [
    "EpochStats",
    "TrainResult",
    "Validator",
    "check_full_softmax",
    "init_model",
    "resolve_device",
    "train",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    """One epoch's figures: mean loss, wall seconds, throughput (examples / s) and the
    validation metric when early stopping watches one."""

    epoch: int
    loss: float
    seconds: float
    examples_per_s: float
    val_metric: float | None = None


@dataclass
class TrainResult:
    """Per-epoch history, the device used and the epoch whose weights the model holds."""

    device: str
    epochs: list[EpochStats] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    # Kind 'hybrid': the validation metric of every linear share tried
    # (``model.hybrid.choose_blend``) and the share the model holds; empty / None otherwise.
    blend: dict[float, float] = field(default_factory=dict)
    blend_share: float | None = None

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


Validator = Callable[[TwoTower], float]


@dataclass(frozen=True)
class _Batches:
    """Training tensors on the device; rows index the vocabulary (0 = unknown)."""

    users: Tensor  # (N,) int64
    items: Tensor  # (N,) int64
    history: Tensor | None  # (N, H) int64 item rows, 0 = padding
    labels: Tensor | None  # (N,) float32 for bce


def check_full_softmax(cfg: TrainConfig, n_items: int) -> None:
    """Loss 'full_softmax' scores every item: only for catalogues up to
    ``FULL_SOFTMAX_MAX_ITEMS`` items, and without sampled negatives (they would be scored
    twice). Raises ValueError naming the setting."""
    if n_items > FULL_SOFTMAX_MAX_ITEMS:
        raise ValueError(
            f"loss 'full_softmax' scores every item each step: {n_items:,} items is over its "
            f"limit of {FULL_SOFTMAX_MAX_ITEMS:,}; use loss 'softmax' (sampled, logQ-corrected)"
        )
    if cfg.uniform_negatives or cfg.hard_negatives:
        raise ValueError(
            "loss 'full_softmax' already scores every item: uniform_negatives and "
            "hard_negatives must be 0"
        )


class _Step:
    """One optimisation step's loss for a batch of example indices."""

    def __init__(self, model: TwoTower, tables: FeatureTables, data: _Batches, cfg: TrainConfig):
        self.model, self.tables, self.data, self.cfg = model, tables, data, cfg
        self.n_items = model.spec.n_items
        self.log_q: Tensor | None = None
        if cfg.loss == "softmax" and cfg.logq_correction:
            counts = torch.bincount(data.items, minlength=self.n_items + 1)
            self.log_q = log_sampling_probability(counts).to(data.items.device)
        # The BCE logit bias is a Parameter so DDP syncs its gradient like the towers'.
        self.bias = nn.Parameter(
            torch.zeros((), device=data.items.device), requires_grad=cfg.loss == "bce"
        )

    def _items(self, rows: Tensor, gen: torch.Generator) -> Tensor:
        t = self.tables
        return self.model.forward_item(
            _dropout_ids(rows, self.cfg.id_dropout, gen),
            t.item_category_rows[rows],
            t.item_content[rows],
        )

    def _correction(self, rows: Tensor, batch: int) -> Tensor | None:
        if self.log_q is None:
            return None
        return log_expected_count(self.log_q[rows], batch, self.cfg.uniform_negatives, self.n_items)

    def _uniform(self, n: int, gen: torch.Generator) -> Tensor:
        device = self.data.items.device
        return torch.randint(1, self.n_items + 1, (n,), generator=gen, device=device)

    def _hard(self, u_vec: Tensor, pos: Tensor, gen: torch.Generator) -> Tensor:
        """(B, H) rows of the top-scoring pool items that are not the example's positive."""
        pool = self._uniform(self.cfg.hard_negative_pool, gen)
        with torch.no_grad():
            t = self.tables
            pool_vec = self.model.forward_item(
                pool, t.item_category_rows[pool], t.item_content[pool]
            )
            scores = u_vec.detach() @ pool_vec.T
            scores = scores.masked_fill(pool[None, :] == pos[:, None], float("-inf"))
            top = scores.topk(min(self.cfg.hard_negatives, len(pool)), dim=1).indices
        return pool[top]

    def loss(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        cfg, data, t = self.cfg, self.data, self.tables
        u, i = data.users[idx], data.items[idx]
        hist = None if data.history is None else data.history[idx]
        u_vec = self.model.forward_user(
            _dropout_ids(u, cfg.id_dropout, gen), t.user_profile[u], hist
        )
        return self._objective(u_vec, u, i, idx, gen) + self._id_penalty(u, i)

    def _id_penalty(self, u: Tensor, i: Tensor) -> Tensor | float:
        """``id_l2`` * mean squared norm of the batch's user and item ID rows (B, id_dim):
        the sparse tables' regulariser; the lookups' gradients stay sparse."""
        if self.cfg.id_l2 <= 0:
            return 0.0
        user_tower, item_tower = self.model.user_tower, self.model.item_tower
        # train() refuses the linear and hybrid kinds
        assert isinstance(user_tower, UserTower) and isinstance(item_tower, ItemTower)
        users = user_tower.id_embedding(u)
        items = item_tower.id_embedding(i)
        return self.cfg.id_l2 * (users.square().sum(1).mean() + items.square().sum(1).mean())

    def _objective(
        self, u_vec: Tensor, u: Tensor, i: Tensor, idx: Tensor, gen: torch.Generator
    ) -> Tensor:
        """The configured loss of user vectors (B, D) against positives i (B,)."""
        cfg, data = self.cfg, self.data
        if cfg.loss == "full_softmax":
            rows = torch.arange(1, self.n_items + 1, device=i.device)
            return full_softmax_loss(u_vec, self._items(rows, gen), i, cfg.temperature)
        i_vec = self._items(i, gen)
        if cfg.loss == "bce":
            assert data.labels is not None
            return bce_loss(u_vec, i_vec, data.labels[idx], cfg.temperature, self.bias)
        b = len(idx)
        extra = extra_vec = hard = hard_vec = None
        if cfg.uniform_negatives > 0:
            extra = self._uniform(cfg.uniform_negatives, gen)
            extra_vec = self._items(extra, gen)
        if cfg.hard_negatives > 0:
            # Mined, not sampled: no proposal to correct for exactly; they get the same
            # expected-count correction as any candidate, so a popular hard negative is
            # not pushed down twice.
            hard = self._hard(u_vec, i, gen)
            hard_vec = self._items(hard.reshape(-1), gen).reshape(*hard.shape, -1)
        return mixed_softmax_loss(
            u_vec,
            i_vec,
            i,
            cfg.temperature,
            self._correction(i, b),
            extra_vec,
            extra,
            None if extra is None else self._correction(extra, b),
            hard_vec,
            hard,
            None if hard is None else self._correction(hard, b),
        )


def train(
    model: TwoTower,
    tables: FeatureTables,
    user_rows: npt.NDArray[np.int64],
    item_rows: npt.NDArray[np.int64],
    cfg: TrainConfig,
    labels: npt.NDArray[np.float32] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    history: npt.NDArray[np.int64] | None = None,
    validate: Validator | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place.

    Args:
        model: the two-tower model (its feature scaling should already be fitted).
        tables: row-indexed user/item features.
        user_rows, item_rows: (N,) int64 vocabulary rows (>= 1) of each training example:
            positives for ``softmax``; impressions for ``bce``.
        cfg: loss, negatives, epochs, batch size, learning rates, temperature, seed, device.
        labels: (N,) float32 click labels, required for ``bce``.
        on_epoch: called after every epoch (progress reporting).
        history: (N, H) int64 item rows of each example's user's last H items strictly
            before the example (0 = padding); required when the model has the feature.
        validate: scores the model on held-out data (higher = better) after every epoch;
            with ``cfg.early_stopping_patience`` the best epoch's weights are restored.
        on_step: ``(epoch, step, steps_per_epoch)`` about 50 times per epoch and after its
            last step (progress bars; steps count from 1).

    With ``cfg.world_size`` > 1 every process of the group calls this with the same
    arguments; only rank 0 runs ``validate`` (its figure is broadcast, so every process
    stops at the same epoch). The returned losses are means over all processes' steps and
    the throughput counts every process's examples.
    """
    if model.linear or model.hybrid:
        raise ValueError(
            f"tower kind {model.spec.tower.kind!r} is not trained by SGD as a whole (linear: "
            "closed form, model.linear_train.fit_linear; hybrid: model.pipeline.fit, each "
            "part as alone)"
        )
    if len(user_rows) != len(item_rows):
        raise ValueError(f"user_rows ({len(user_rows)}) and item_rows ({len(item_rows)}) differ")
    if len(user_rows) < 2:
        raise ValueError(f"need at least 2 training examples, got {len(user_rows)}")
    if cfg.loss == "bce" and (labels is None or len(labels) != len(user_rows)):
        raise ValueError("loss 'bce' needs one label per example")
    if cfg.loss == "full_softmax":
        check_full_softmax(cfg, model.spec.n_items)
    if model.history_len > 0 and (
        history is None or history.shape != (len(user_rows), model.history_len)
    ):
        raise ValueError(
            f"the model reads {model.history_len} history items: history must be "
            f"({len(user_rows)}, {model.history_len}), got "
            f"{None if history is None else history.shape}"
        )
    if cfg.early_stopping_patience is not None and validate is None:
        raise ValueError("early stopping needs a validate function")

    rank, world = check_rank(cfg.world_size), cfg.world_size
    device = resolve_device(cfg.device)
    # Guard against denormal floats in the backward pass (they slowed steps ~5x here).
    # Process-wide and left on: flushing denormals to zero is harmless for this workload.
    torch.set_flush_denormal(True)
    model.to(device).train()
    data = _Batches(
        users=torch.as_tensor(user_rows, dtype=torch.int64, device=device),
        items=torch.as_tensor(item_rows, dtype=torch.int64, device=device),
        history=None
        if history is None or model.history_len == 0
        else torch.as_tensor(history, dtype=torch.int64, device=device),
        labels=None
        if labels is None
        else torch.as_tensor(labels, dtype=torch.float32, device=device),
    )
    step = _Step(model, tables.to(device), data, cfg)
    loss_of: Callable[[Tensor, torch.Generator], Tensor] = step.loss
    if world > 1:
        loss_of = wrap_loss(model, step.bias, step.loss, model.sparse_parameters())
    dense = [*model.dense_parameters(), *([step.bias] if cfg.loss == "bce" else [])]
    optimisers: list[torch.optim.Optimizer] = [
        torch.optim.SparseAdam(model.sparse_parameters(), lr=cfg.sparse_lr),
        # AdamW with decay 0 is Adam; kept as Adam then, so existing runs are unchanged.
        torch.optim.AdamW(dense, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.weight_decay > 0
        else torch.optim.Adam(dense, lr=cfg.lr),
    ]
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    # Every process shuffles alike (so the ranks split one batch); dropout and negatives
    # come from a stream of their own per rank, independent of the shuffle's (the same
    # seed for both would repeat the shuffle's draws as rank 0's dropout). One process
    # keeps a single generator, as before world_size existed.
    order = gen
    if world > 1:
        order = torch.Generator(device=device)
        order.manual_seed(cfg.seed)
        gen.manual_seed(int(np.random.SeedSequence([cfg.seed, rank]).generate_state(1)[0]))
    result = TrainResult(device=str(device))
    best: tuple[float, dict[str, Tensor]] | None = None
    n = len(data.users)
    steps_per_epoch = -(-n // cfg.batch_size)
    # ~50 progress calls per epoch: frequent enough for a bar, too rare to cost anything.
    every = max(1, steps_per_epoch // 50)
    # Tower dropout draws from the global RNG: seeded here, and restored afterwards, so a
    # run is reproducible without touching the caller's random state.
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(cfg.seed + rank)
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            perm = torch.randperm(n, generator=order, device=device)
            total, steps = 0.0, 0
            # Adapts the CPU thread count to the cores this run really gets
            # (model.threadgov); not under DDP, whose processes share the cores by design.
            tick = adaptive_loop(device.type == "cpu" and world == 1)
            for lo in range(0, n, cfg.batch_size):
                idx = perm[lo : lo + cfg.batch_size]
                if len(idx) < 2 * world:
                    continue  # a softmax over one example has no negatives
                if world > 1:
                    idx = idx[rank::world]
                loss = loss_of(idx, gen)
                for opt in optimisers:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    average_sparse_grads(model.sparse_parameters())
                for opt in optimisers:
                    opt.step()
                total += float(loss.detach())
                steps += 1
                tick(len(idx))
                if on_step is not None and steps % every == 0:
                    on_step(epoch, steps, steps_per_epoch)
            if on_step is not None:
                on_step(epoch, steps_per_epoch, steps_per_epoch)
            if world > 1:
                total, steps = sum_over_ranks(total, steps, device)
            seconds = time.perf_counter() - start
            val = None
            if validate is not None:
                val = float(validate(model.eval())) if rank == 0 else math.nan
                model.train()
                if world > 1:
                    val = from_rank0(val, device)
            stats = EpochStats(epoch, total / max(steps, 1), seconds, n / max(seconds, 1e-9), val)
            result.epochs.append(stats)
            log.debug(
                "epoch %d/%d loss %.4f (%.1f s, %.0f ex/s)%s",
                epoch,
                cfg.epochs,
                stats.loss,
                seconds,
                stats.examples_per_s,
                "" if val is None else f" validation {val:.4f}",
            )
            if on_epoch is not None:
                on_epoch(stats)
            if val is not None and (best is None or val > best[0]):
                best = (val, {k: v.detach().clone() for k, v in model.state_dict().items()})
                result.best_epoch = epoch
            patience = cfg.early_stopping_patience
            if (
                patience is not None
                and result.best_epoch is not None
                and epoch - result.best_epoch >= patience
            ):
                result.stopped_early = epoch < cfg.epochs
                break
    if best is not None and cfg.early_stopping_patience is not None:
        model.load_state_dict(best[1])
    model.eval()
    return result
