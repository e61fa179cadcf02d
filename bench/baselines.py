"""The bare-library counterparts the pipeline's code is measured against: a minimal
PyTorch training loop, a bare ``inference_mode`` forward, and Faiss called directly.

Each does the same work as the pipeline function it is compared with (same model, batches,
RNG draws, loss and optimisers; same factory and training sample), and nothing else, so
the ratio ours / bare is the cost of our wrapping.
"""

from __future__ import annotations

import faiss
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from model.config import TrainConfig
from model.features import FeatureTables
from model.index import default_train_size
from model.towers import TwoTower

__all__ = ["bare_embed_items", "direct_faiss_build", "plain_train"]


def plain_train(
    model: TwoTower,
    tables: FeatureTables,
    user_rows: npt.NDArray[np.int64],
    item_rows: npt.NDArray[np.int64],
    cfg: TrainConfig,
) -> float:
    """One pass of in-batch softmax training (logQ, ID dropout, SparseAdam + Adam), written
    as a plain loop; draws the same permutation and dropout masks as ``model.train.train``
    with the same seed, so it sees the same batches. Returns the mean loss over steps."""
    torch.set_flush_denormal(True)  # what train() does: denormals slow the backward ~5x
    model.train()
    users, items = torch.from_numpy(user_rows), torch.from_numpy(item_rows)
    counts = torch.bincount(items, minlength=model.spec.n_items + 1).to(torch.float64)
    q = counts.clamp_min(float(counts[counts > 0].min())) / counts.sum()
    log_q = q.log().to(torch.float32)
    sparse = model.sparse_parameters()
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    opt_sparse = torch.optim.SparseAdam(sparse, lr=cfg.sparse_lr)
    opt_dense = torch.optim.Adam(dense, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(users), generator=gen)
    total, steps = 0.0, 0
    for lo in range(0, len(users), cfg.batch_size):
        idx = perm[lo : lo + cfg.batch_size]
        if len(idx) < 2:
            continue
        u, i = users[idx], items[idx]
        u_in, i_in = u, i
        if cfg.id_dropout > 0:
            u_in = u.masked_fill(torch.rand(u.shape, generator=gen) < cfg.id_dropout, 0)
            i_in = i.masked_fill(torch.rand(i.shape, generator=gen) < cfg.id_dropout, 0)
        u_vec = model.user_tower(u_in, tables.user_profile[u])
        i_vec = model.item_tower(i_in, tables.item_category_rows[i], tables.item_content[i])
        logits = u_vec @ i_vec.T / cfg.temperature - log_q[i][None, :]
        eye = torch.eye(len(i), dtype=torch.bool)
        logits = logits.masked_fill((i[None, :] == i[:, None]) & ~eye, float("-inf"))
        loss = F.cross_entropy(logits, torch.arange(len(i)))
        opt_sparse.zero_grad(set_to_none=True)
        opt_dense.zero_grad(set_to_none=True)
        loss.backward()
        opt_sparse.step()
        opt_dense.step()
        total += float(loss.detach())
        steps += 1
    model.eval()
    return total / max(steps, 1)


def bare_embed_items(
    model: TwoTower,
    id_rows: torch.Tensor,
    category_rows: torch.Tensor,
    content: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """(I, D) item vectors: the item tower over pre-built tensors under inference_mode."""
    with torch.inference_mode():
        out = torch.empty((len(id_rows), model.dim))
        for lo in range(0, len(id_rows), batch_size):
            hi = lo + batch_size
            out[lo:hi] = model.item_tower(id_rows[lo:hi], category_rows[lo:hi], content[lo:hi])
    return out


def direct_faiss_build(
    vectors: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], factory: str, seed: int
) -> faiss.Index:
    """``faiss.index_factory`` + ``train`` on the pipeline's sample + ``add_with_ids``.

    Index types that cannot hold arbitrary IDs (Flat, HNSW) get an ``IndexIDMap2``, as in
    the pipeline; nothing is validated or converted.
    """
    n, d = vectors.shape
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        # The pipeline's sample size and rows, so both sides train on the same points.
        size = min(n, default_train_size(index))
        rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
        index.train(vectors[rows])
    if not isinstance(index, faiss.IndexIVF):
        index = faiss.IndexIDMap2(index)
    index.add_with_ids(vectors, ids)
    return index
