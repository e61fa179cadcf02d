"""Information ceilings on a synthetic world: how close can any learned dot-product model get
to the oracle when it is handed part of the hidden truth?

Next to the oracle (true score) and two degraded oracles, two models are trained with the
project's sampled-softmax loss: one keeps the true item vectors fixed and learns only the
users, the other keeps the true user vectors fixed and learns only the items. What they
miss of the oracle's recall is what the training data cannot tell, whatever the towers.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from core.config import DataConfig, NightlyConfig
from core.dataio import Truth, load_prepared, load_truth
from core.evaluation import rank_all
from core.snapshots import ensure_snapshot
from core.threads import apply_threads
from model.fullrank import evaluate_ranking
from model.losses import mixed_softmax_loss
from model.pipeline import Prepared, ScoreFn, score_block_users
from model.synthetic import oracle_scores
from storage import Layout, snapshot_path

__all__ = [
    "ITEMS_SPEC",
    "LEARNED_ITEMS",
    "LEARNED_USERS",
    "ORACLE",
    "ORACLE_NO_POP",
    "ORACLE_TRAIN_POP",
    "POPULARITY",
    "USERS_SPEC",
    "CeilingFit",
    "CeilingResult",
    "FitSpec",
    "main",
    "render_table",
    "run_ceiling",
]

log = logging.getLogger(__name__)

ORACLE = "oracle"
ORACLE_TRAIN_POP = "oracle, popularity from training counts"
ORACLE_NO_POP = "oracle, no popularity"
LEARNED_USERS = "true items + popularity, learned users"
LEARNED_ITEMS = "true users, learned items"
POPULARITY = "popularity"

# Best-epoch selection watches this on validation; the share-of-oracle column divides it.
_VAL_METRIC, _VAL_K = "recall@50", 50


@dataclass(frozen=True)
class FitSpec:
    """Optimiser settings of one learned ceiling (Adam on in-batch sampled softmax)."""

    lr: float
    l2: float = 0.0  # weight of the mean squared norm of the learned vectors of a batch
    batch_size: int = 1024


# Settings the prototypes found best on the default small world.
USERS_SPEC = FitSpec(lr=0.01, l2=0.003)
ITEMS_SPEC = FitSpec(lr=0.001)


@dataclass(frozen=True)
class CeilingFit:
    """How one learned ceiling trained: epochs run, the validation-chosen one, its metric."""

    name: str
    epochs: int
    best_epoch: int
    val_metric: float
    seconds: float


@dataclass(frozen=True)
class CeilingResult:
    """Test metrics of every ranker, all over the same users and masks as the nightly run."""

    snapshot_id: str
    n_users: int
    n_items: int
    rankers: dict[str, dict[str, float]]
    fits: list[CeilingFit] = field(default_factory=list)

    def of_oracle(self, name: str) -> float:
        """``name``'s Recall@50 as a fraction of the oracle's."""
        return self.rankers[name][_VAL_METRIC] / self.rankers[ORACLE][_VAL_METRIC]

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"of_oracle": {name: self.of_oracle(name) for name in self.rankers}}


class _FreeVectors(nn.Module):
    """(n, dim) vectors = a free vector per row + a linear map of the row's standardised
    features [+ a vector per category]; everything starts at zero, so the learned side
    begins as "no opinion" and the fixed true side carries the first gradients."""

    def __init__(self, features: Tensor, dim: int, categories: Tensor | None = None) -> None:
        super().__init__()
        # Standardised so one learning rate suits every feature; clamp guards constant columns.
        self.features = (features - features.mean(0)) / features.std(0).clamp_min(1e-6)
        self.categories = categories
        self.free = nn.Parameter(torch.zeros(len(features), dim))
        # The per-category vector already offsets each item, so only users get a bias.
        self.linear = nn.Linear(features.shape[1], dim, bias=categories is None)
        nn.init.zeros_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)
        n_cat = 0 if categories is None else int(categories.max()) + 1
        self.per_category = nn.Parameter(torch.zeros(n_cat, dim))

    def forward(self, rows: Tensor) -> Tensor:
        """(b,) int64 rows -> (b, dim) vectors."""
        out = self.free[rows] + self.linear(self.features[rows])
        if self.categories is not None:
            out = out + self.per_category[self.categories[rows]]
        return out


def _validator(prep: Prepared) -> Callable[[ScoreFn], float]:
    """Validation Recall@50: validation items relevant, training items masked."""
    d, split = prep.data, prep.split
    relevant, exclude = d.sets(split.val), d.sets(split.train)
    users = np.flatnonzero(relevant.lengths() > 0)
    block = score_block_users(d.n_items)

    def validate(fn: ScoreFn) -> float:
        m = evaluate_ranking(fn, users, d.n_items, relevant, exclude, (_VAL_K,), block)
        return m[_VAL_METRIC]

    return validate


def _dot_scorer(user_vecs: Tensor, item_vecs: Tensor) -> ScoreFn:
    """Scores = (b, D) user rows @ (I, D).T."""
    return lambda rows: user_vecs[torch.from_numpy(rows)] @ item_vecs.T


def _fit(
    name: str,
    learned: _FreeVectors,
    fixed: Tensor,
    learn_users: bool,
    prep: Prepared,
    log_q: Tensor,
    spec: FitSpec,
    epochs: int,
    seed: int,
) -> tuple[ScoreFn, CeilingFit]:
    """Train ``learned`` (users or items) against the (n, D) ``fixed`` other side with
    in-batch softmax, logQ correction and accidental-hit masking; returns the scorer of
    the epoch with the best validation Recall@50 and how the fit went."""
    d, train = prep.data, prep.split.train
    users, items = torch.as_tensor(d.inter_user[train]), torch.as_tensor(d.inter_item[train])
    gen = torch.Generator().manual_seed(seed)  # batch order is the only randomness
    opt = torch.optim.Adam(learned.parameters(), lr=spec.lr)
    validate = _validator(prep)
    all_rows = torch.arange(len(learned.free))
    best: tuple[float, int, ScoreFn] | None = None
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(users), generator=gen)
        for lo in range(0, len(perm), spec.batch_size):
            idx = perm[lo : lo + spec.batch_size]
            u, i = users[idx], items[idx]
            vecs = learned(u if learn_users else i)
            user_vecs, item_vecs = (vecs, fixed[i]) if learn_users else (fixed[u], vecs)
            # temperature 1: the fixed side already carries the oracle's scale.
            loss = mixed_softmax_loss(user_vecs, item_vecs, i, 1.0, log_q[i])
            if spec.l2:
                loss = loss + spec.l2 * vecs.pow(2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            vecs = learned(all_rows)
        scorer = _dot_scorer(vecs, fixed) if learn_users else _dot_scorer(fixed, vecs)
        metric = validate(scorer)
        log.info("%s epoch %d: validation %s %.4f", name, epoch, _VAL_METRIC, metric)
        if best is None or metric > best[0]:
            best = (metric, epoch, scorer)
    assert best is not None  # epochs >= 1 (checked by run_ceiling)
    fit = CeilingFit(name, epochs, best[1], best[0], time.perf_counter() - start)
    return best[2], fit


def _oracle_scorer(truth: Truth, log_popularity: npt.NDArray[np.float32]) -> ScoreFn:
    """The true cosine / temperature plus ``log_popularity`` (I,)."""
    pop = log_popularity.astype(np.float32)
    return lambda rows: torch.from_numpy(
        oracle_scores(truth.user_latent[rows], truth.item_latent, pop, truth.temperature)
    )


def run_ceiling(
    cfg: NightlyConfig, root: str, epochs: int = 12, threads: int | None = None, seed: int = 0
) -> CeilingResult:
    """Prepare ``cfg``'s synthetic snapshot under ``root``, fit both learned ceilings and
    rank every ceiling next to the oracles and popularity on the test split."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    apply_threads(threads)
    snapshot = ensure_snapshot(root, cfg.data)
    folder = snapshot_path(Layout(Path(root)), snapshot.snapshot_id)
    prep = load_prepared(folder, cfg.data)
    d = prep.data
    truth = load_truth(folder, d)
    if truth is None:
        raise ValueError(
            f"snapshot {snapshot.snapshot_id} at {folder} has no ground truth (real data): "
            "information ceilings need a synthetic world (data.source 'synthetic')"
        )
    counts = torch.bincount(torch.as_tensor(d.inter_item[prep.split.train]), minlength=d.n_items)
    # Unseen items count once so the log stays finite; they are never in a training batch.
    log_q = (counts.double().clamp_min(1) / counts.sum()).log().float()
    true_items = torch.from_numpy(np.c_[truth.item_latent, truth.log_popularity])
    true_users = torch.from_numpy(
        np.c_[truth.user_latent / truth.temperature, np.ones(d.n_users, np.float32)]
    )
    dim = true_items.shape[1]
    learned_users = _FreeVectors(torch.from_numpy(d.profile), dim)
    learned_items = _FreeVectors(
        torch.from_numpy(d.content), dim, torch.as_tensor(d.category.astype(np.int64))
    )
    users_scorer, users_fit = _fit(
        LEARNED_USERS, learned_users, true_items, True, prep, log_q, USERS_SPEC, epochs, seed
    )
    items_scorer, items_fit = _fit(
        LEARNED_ITEMS, learned_items, true_users, False, prep, log_q, ITEMS_SPEC, epochs, seed
    )
    popularity = counts.float()
    scorers: dict[str, ScoreFn] = {
        ORACLE: _oracle_scorer(truth, truth.log_popularity),
        ORACLE_TRAIN_POP: _oracle_scorer(truth, log_q.numpy()),
        ORACLE_NO_POP: _oracle_scorer(truth, np.zeros(d.n_items, np.float32)),
        LEARNED_USERS: users_scorer,
        LEARNED_ITEMS: items_scorer,
        POPULARITY: lambda rows: popularity.expand(len(rows), -1).clone(),
    }
    n_users, rankers, _ = rank_all(prep, scorers, cfg.evaluation)
    return CeilingResult(snapshot.snapshot_id, n_users, d.n_items, rankers, [users_fit, items_fit])


_COLUMNS = ("recall@10", "recall@50", "ndcg@10", "ndcg@50", "hit_rate@50")


def render_table(res: CeilingResult) -> str:
    """Markdown: one row per ranker with its test metrics, share of the oracle's Recall@50
    and, for the learned ceilings, the validation-chosen epoch."""
    fits = {f.name: f for f in res.fits}
    cols = [c for c in _COLUMNS if c in res.rankers[ORACLE]]
    head = ["ranker", *cols, "of oracle R@50", "epoch (of)"]
    lines = [
        f"Snapshot `{res.snapshot_id}`: {res.n_users:,} test users, full ranking over "
        f"{res.n_items:,} items (train + validation items masked).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, metrics in res.rankers.items():
        fit = fits.get(name)
        cells = [name, *(f"{metrics[c]:.4f}" for c in cols), f"{res.of_oracle(name):.1%}"]
        cells.append("" if fit is None else f"{fit.best_epoch} ({fit.epochs})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.ceiling", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--scale", default="small", help="synthetic scale (default small)")
    p.add_argument("--root", default=None, help="store root (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--epochs", type=int, default=12, help="epochs per learned ceiling")
    p.add_argument("--threads", type=int, default=None, help="torch/Faiss threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order")
    args = p.parse_args(argv)
    cfg = NightlyConfig(data=DataConfig(scale=args.scale))
    with tempfile.TemporaryDirectory(prefix="towerflow-ceiling-") as tmp:
        res = run_ceiling(cfg, args.root or tmp, args.epochs, args.threads, args.seed)
    table = render_table(res)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
        log.info("wrote %s", args.out)
    print(table)
    return 0


if __name__ == "__main__":
    # Here, not in main(): force replaces the handler importing Prefect (via tasks) put on
    # the root logger at WARNING, which would silence the progress lines, and a caller of
    # main() (a test) keeps its own logging.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    raise SystemExit(main())
