"""Full-rank linear autoencoder variants beside EASE on one split of an imported log: the
measurements behind the linear rung's design (docs/linear.md, "What was tried").

    python -m bench.linear_variants --config configs/ml-latest-small.yaml --split-seed 2020

Each variant is the full-rank DLAE (``B = A^-1 C``, see ``model.linear``) of the training
users' bags with one design choice changed: the bag cap, a constant always-on input
column, and user weights ``|bag|^-b``. Items without a training interaction score 0, as
EASE scores them, so the rows differ only by the choice. Printed: validation Recall@10
(inputs: train bags) and test Recall@10 / NDCG@10 (inputs: train + validation bags),
ranked as ``towerflow evaluate`` ranks (train and validation masked at test). Dense
float64 (n, n) solves: for logs of up to ~10,000 items (~1 min a variant on one core).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from core.config import NightlyConfig, load_config
from core.dataio import load_prepared
from core.evaluation import rank_all, reference_scorers
from core.importing import run_import
from model.fullrank import evaluate_ranking
from model.linear import bag_matrix
from model.pipeline import Prepared, ScoreFn, history_rows, validation_sets
from storage import Layout, snapshot_path

__all__ = ["Variant", "main", "solve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One full-rank fit: bag cap, constant input column, user-weight exponent."""

    name: str
    cap: int = 5000
    constant: bool = False
    user_weight: float = 0.0


VARIANTS = (
    Variant("bags of 1,000", cap=1000),
    Variant("bags of 5,000 (the rung)"),
    Variant("bags of 5,000 + constant input", constant=True),
    Variant("user weights b = 0.25", user_weight=0.25),
    Variant("user weights b = 0.5", user_weight=0.5),
)


def _bags(prep: Prepared, mask: npt.NDArray[np.bool_], cap: int) -> npt.NDArray[np.float64]:
    """(U, n) dense binary matrix of each user's latest ``cap`` items among ``mask``, over
    the trained items (ID rows 1..n as columns 0..n-1; untrained items dropped)."""
    return bag_matrix(history_rows(prep, mask, cap), prep.vocab.n_items).toarray()


def _inputs(x: npt.NDArray[np.float64], constant: bool) -> npt.NDArray[np.float64]:
    return np.hstack([x, np.ones((len(x), 1))]) if constant else x


def solve(
    x: npt.NDArray[np.float64], v: Variant, l2: float, dropout: float
) -> npt.NDArray[np.float64]:
    """(n [+ 1], n) full-rank DLAE weights of the (U, n) bags ``x`` under variant ``v``."""
    counts = x.sum(axis=1)
    weight = np.where(counts > 0, np.maximum(counts, 1.0) ** -v.user_weight, 0.0)
    weight *= len(weight) / max(weight.sum(), 1e-12)  # mean 1: l2 keeps its scale
    xin = _inputs(x, v.constant)
    a = xin.T @ (weight[:, None] * xin)
    n = x.shape[1]
    penalty = np.full(len(a), l2)
    penalty[:n] += dropout / (1.0 - dropout) * a.diagonal()[:n]
    cross = xin.T @ (weight[:, None] * x)
    a[np.diag_indices(len(a))] += penalty
    return np.asarray(np.linalg.solve(a, cross), np.float64)


def _scorer(prep: Prepared, scores: npt.NDArray[np.float64]) -> ScoreFn:
    """Score rows over item positions (untrained items 0) from (U, n) trained-item scores."""
    rows = prep.vocab.item_id_row
    full = np.zeros((len(scores), len(rows)), np.float32)
    full[:, rows > 0] = scores[:, rows[rows > 0] - 1]
    table = torch.from_numpy(full)
    return lambda users: table[torch.as_tensor(users)].clone()


def run(cfg: NightlyConfig, l2: float, dropout: float) -> list[tuple[str, float, float, float]]:
    """(name, validation Recall@10, test Recall@10, test NDCG@10) per variant, then EASE."""
    importing = cfg.data.importing
    if importing is None:
        raise ValueError("the config must import a log (data.source: import)")
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(Path(tmp))
        folder = snapshot_path(layout, run_import(layout, importing).ref.snapshot_id)
        prep = load_prepared(folder, cfg.data)
        sets = validation_sets(prep, None, 0)
        if sets is None:
            raise ValueError("the split has no validation part")
        users, relevant, exclude = sets
        n_items = prep.data.n_items
        rows = []
        for v in VARIANTS:
            train = _bags(prep, prep.split.train, v.cap)
            known = _bags(prep, ~prep.split.test, v.cap)
            b = solve(train, v, l2, dropout)
            val = evaluate_ranking(_scorer(prep, _inputs(train, v.constant) @ b), users,
                                   n_items, relevant, exclude, ks=(10,))  # fmt: skip
            scorer = _scorer(prep, _inputs(known, v.constant) @ b)
            _, test, _ = rank_all(prep, {"x": scorer}, cfg.evaluation)
            rows.append((v.name, val["recall@10"], test["x"]["recall@10"], test["x"]["ndcg@10"]))
            log.info("%s: %s", v.name, rows[-1][1:])
        tuning: dict[str, float] = {}
        refs = reference_scorers(prep, folder, cfg.evaluation, tuning)
        baselines = {k: f for k, f in refs.items() if k not in ("popularity", "oracle")}
        _, test, _ = rank_all(prep, baselines, cfg.evaluation)
        for name, metrics in test.items():
            chosen = max(tuning.values(), default=float("nan"))  # the candidate it kept
            rows.append((f"{name} (chosen on validation)", chosen, metrics["recall@10"],
                         metrics["ndcg@10"]))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="an import config")
    parser.add_argument("--split-seed", type=int, default=2020)
    parser.add_argument("--l2", type=float, default=196.0, help="the rung's linear_l2")
    parser.add_argument("--dropout", type=float, default=0.37, help="the rung's dropout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.config, {"data.split_seed": args.split_seed})
    rows = run(cfg, args.l2, args.dropout)
    out = ["| variant | validation R@10 | test R@10 | test NDCG@10 |", "|---|---|---|---|"]
    out += [f"| {n} | {v:.4f} | {r:.4f} | {g:.4f} |" for n, v, r, g in rows]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
