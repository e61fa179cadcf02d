"""Data parallelism for the training loop (``model.train``): torch.distributed helpers.

Pure torch, in memory: the process group is started by the caller (``core.distributed``
or ``torchrun``). With ``TrainConfig.world_size`` > 1 every process shuffles alike, takes
``batch[rank::world]`` of each step's batch, and the gradients are averaged:

- the dense layers by ``DistributedDataParallel`` (bucketed all-reduce, overlapped with
  the backward pass);
- the sparse ID tables by ``average_sparse_grads`` after the backward pass: each process
  all-gathers the others' (row index, gradient row) pairs and sums them, so a step moves
  only the rows some process touched, as in one process. DDP's own sparse path (gloo's
  sparse all-reduce) crashed here with heap corruption ("malloc(): unaligned tcache
  chunk detected", rank 1, epoch 2 of the small world for seeds 1 and 4, not 0; torch 2.13
  CPU), and NCCL has no sparse all-reduce at all; the all-gather works on both backends.
  A dense gradient instead would move the whole table every step (1M rows x 64 floats =
  256 MB).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["average_sparse_grads", "check_rank", "from_rank0", "sum_over_ranks", "wrap_loss"]

LossFn = Callable[[Tensor, torch.Generator], Tensor]


class _LossModule(nn.Module):
    """A loss function as a module's forward: DDP syncs the gradients of what its forward
    ran, so the step's loss must run inside one."""

    def __init__(self, model: nn.Module, bias: nn.Parameter, loss: LossFn):
        super().__init__()
        self.model = model
        self.bias = bias
        self._loss = loss

    def forward(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        return self._loss(idx, gen)


def wrap_loss(model: nn.Module, bias: nn.Parameter, loss: LossFn, sparse: list[Tensor]) -> LossFn:
    """``loss`` (batch indices, generator -> scalar) run under DDP, which all-reduces the
    gradients of ``model``'s parameters and ``bias``, except the ``sparse`` ones (left to
    ``average_sparse_grads``)."""
    module = _LossModule(model, bias, loss)
    skip = {id(p) for p in sparse}
    ignored = [name for name, p in module.named_parameters() if id(p) in skip]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
    # Buffers (feature scaling) are fitted before training, alike in every process, and
    # never change: no need to send them every step.
    return DistributedDataParallel(module, forward_sync_buffers=False)


def average_sparse_grads(params: list[Tensor]) -> None:
    """Replace each parameter's sparse gradient by the mean over the group's processes
    (every process gets the same coalesced sum / world size). Collective: every process
    calls it with the same parameters in the same order."""
    world = dist.get_world_size()
    for p in params:
        grad = p.grad
        if grad is None:
            grad = torch.sparse_coo_tensor(
                torch.empty((1, 0), dtype=torch.int64, device=p.device),
                torch.empty((0, *p.shape[1:]), dtype=p.dtype, device=p.device),
                p.shape,
            )
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        count = torch.tensor([len(rows)], dtype=torch.int64, device=p.device)
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        sizes = [int(c) for c in counts]
        most = max(sizes)
        # all_gather needs equal shapes: pad to the longest, trim after.
        pad = most - len(rows)
        rows = torch.cat([rows, rows.new_zeros(pad)])
        values = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
        all_rows = [torch.empty_like(rows) for _ in range(world)]
        all_values = [torch.empty_like(values) for _ in range(world)]
        dist.all_gather(all_rows, rows)
        dist.all_gather(all_values, values)
        p.grad = torch.sparse_coo_tensor(
            torch.cat([r[:n] for r, n in zip(all_rows, sizes, strict=True)])[None],
            torch.cat([v[:n] for v, n in zip(all_values, sizes, strict=True)]) / world,
            p.shape,
        ).coalesce()


def check_rank(world_size: int) -> int:
    """This process's rank; checks the process group ``world_size`` asks for exists."""
    if world_size == 1:
        return 0
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"train.world_size={world_size} needs an initialised torch.distributed process "
            "group in every process (core.distributed.fit_distributed starts them)"
        )
    if dist.get_world_size() != world_size:
        raise RuntimeError(
            f"train.world_size={world_size} but the process group has "
            f"{dist.get_world_size()} processes"
        )
    return dist.get_rank()


def sum_over_ranks(total: float, steps: int, device: torch.device) -> tuple[float, int]:
    """(loss sum, step count) summed over every process of the group (``device``: where
    the backend wants its tensors, CUDA for NCCL)."""
    both = torch.tensor([total, float(steps)], dtype=torch.float64, device=device)
    dist.all_reduce(both)
    return float(both[0]), int(both[1])


def from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` in every process (so all of them stop at the same epoch)."""
    box = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(box, src=0)
    return float(box[0])
