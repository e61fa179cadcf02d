"""The offline steps, measured: data generation, training throughput, item embedding and
index build, each (except generation) next to its bare-library counterpart."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import torch

from bench.baselines import bare_embed_items, direct_faiss_build, plain_train
from bench.measure import PeakRss, RssRuns, Samples, interleave, ratio
from model.ann import default_factory
from model.config import TowerConfig, TowerSpec, TrainConfig
from model.dataset import Dataset, Vocabulary, temporal_split
from model.embed import embed_items
from model.features import FeatureTables, category_rows
from model.index import build_index
from model.synthetic import SyntheticData, generate, synthetic_config
from model.towers import TwoTower
from model.train import init_model, train

__all__ = [
    "TEST_FRAC",
    "VAL_FRAC",
    "Prepared",
    "embedding",
    "generation",
    "index_build",
    "prepare",
    "train_for_ann",
    "training",
]

log = logging.getLogger(__name__)

# Cheap comparisons repeat until each side has about this many seconds of samples.
_MIN_TOTAL_S = 2.0
# The pipeline's defaults (core.config.DataConfig): the same temporal split.
VAL_FRAC, TEST_FRAC = 0.1, 0.1


@dataclass(frozen=True)
class Prepared:
    """What training needs, built as the train task builds it (without the parquet trip).

    N training examples (the training split's interactions as vocabulary rows).
    """

    data: Dataset
    vocab: Vocabulary
    tables: FeatureTables
    spec: TowerSpec
    users: npt.NDArray[np.int64]  # (N,) user ID rows >= 1
    items: npt.NDArray[np.int64]  # (N,) item ID rows >= 1

    def fresh_model(self, seed: int) -> TwoTower:
        """An untrained model with fitted feature scaling (what train_model starts from)."""
        model = init_model(self.spec, seed)
        model.fit_feature_scaling(self.tables.user_profile[1:], self.tables.item_content[1:])
        return model


def generation(scale: str, seed: int, repeats: int) -> tuple[SyntheticData, dict[str, Any]]:
    """Time ``model.synthetic.generate`` at ``scale``; returns the last world and figures."""
    cfg = synthetic_config(scale, seed=seed)
    samples, rss_runs = Samples(), RssRuns()
    data: SyntheticData | None = None
    for r in range(repeats):
        data = None  # drop the previous world first, so a peak holds one world, not two
        with PeakRss() as rss:
            start = time.perf_counter()
            data = generate(cfg)
            samples.seconds.append(time.perf_counter() - start)
        rss_runs.runs.append(rss)
        log.info("generate %s: run %d/%d %.2f s", scale, r + 1, repeats, samples.seconds[-1])
    assert data is not None
    n_inter = len(data.inter_user)
    return data, {
        **samples.as_dict(),
        "users": len(data.user_id),
        "items": len(data.item_id),
        "interactions": n_inter,
        "impressions": len(data.imp_user),
        "interactions_per_s": n_inter / samples.median,
        "rss": rss_runs.as_dict(),
    }


def prepare(raw: SyntheticData) -> tuple[Prepared, dict[str, Any]]:
    """Dataset, temporal split, vocabulary, feature tables and the training examples."""
    with PeakRss() as rss:
        start = time.perf_counter()
        data = Dataset.from_raw(
            raw.user_id,
            raw.profile,
            raw.item_id,
            raw.category,
            raw.content,
            len(raw.category_names),
            raw.inter_user,
            raw.inter_item,
            raw.inter_ts,
        )
        split = temporal_split(data.inter_ts, VAL_FRAC, TEST_FRAC)
        vocab = Vocabulary.from_training(data, split.train)
        tables = vocab.feature_tables(data)
        spec = vocab.tower_spec(data, TowerConfig())
        users = vocab.user_id_row[data.inter_user[split.train]]
        items = vocab.item_id_row[data.inter_item[split.train]]
        seconds = time.perf_counter() - start
    prep = Prepared(data, vocab, tables, spec, users, items)
    return prep, {"seconds": seconds, "train_examples": len(users), "rss": rss.as_dict()}


def training(
    prep: Prepared, steps: int, batch_size: int, warmup_steps: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Examples/s of ``model.train.train`` vs ``plain_train`` over the same ``steps`` batches
    (one epoch over ``steps * batch_size`` seeded examples), fresh model each run."""
    n = steps * batch_size
    rng = np.random.default_rng(seed)
    # With fewer training examples than n (tiny scale), examples repeat: same work per step.
    pick = rng.choice(len(prep.users), n, replace=n > len(prep.users))
    users, items = prep.users[pick], prep.items[pick]
    cfg = TrainConfig(epochs=1, batch_size=batch_size, seed=seed, device="cpu")
    warm = max(warmup_steps, 2) * batch_size
    train(prep.fresh_model(seed), prep.tables, users[:warm], items[:warm], cfg)
    plain_train(prep.fresh_model(seed), prep.tables, users[:warm], items[:warm], cfg)
    ab = interleave(
        lambda m: train(m, prep.tables, users, items, cfg).final_loss,
        lambda m: plain_train(m, prep.tables, users, items, cfg),
        repeats,
        warmup=0,
        prepare=lambda: prep.fresh_model(seed),
    )
    ours_eps, plain_eps = n / ab.ours.median, n / ab.bare.median
    return {
        "steps": steps,
        "batch_size": batch_size,
        "warmup_steps": max(warmup_steps, 2),
        "examples": n,
        "ours": {**ab.ours.as_dict(), "examples_per_s": ours_eps, "rss": ab.ours_rss.as_dict()},
        "plain": {**ab.bare.as_dict(), "examples_per_s": plain_eps, "rss": ab.bare_rss.as_dict()},
        "throughput_ratio": ratio(ours_eps, plain_eps),
        # Same init, batches and RNG draws: the mean losses agree if the loops do the same work.
        "mean_loss_ours": ab.ours_value,
        "mean_loss_plain": ab.bare_value,
    }


def train_for_ann(
    prep: Prepared, epochs: int, max_examples: int | None, batch_size: int, seed: int
) -> tuple[TwoTower, dict[str, Any]]:
    """Train the model whose vectors the index, latency and recall figures use."""
    users, items = prep.users, prep.items
    if max_examples is not None and len(users) > max_examples:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(users), max_examples, replace=False))
        users, items = users[pick], items[pick]
    model = prep.fresh_model(seed)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device="cpu")
    with PeakRss() as rss:
        start = time.perf_counter()
        result = train(model, prep.tables, users, items, cfg)
        seconds = time.perf_counter() - start
    return model, {
        "epochs": epochs,
        "examples_per_epoch": len(users),
        "of_train_split": len(prep.users),
        "seconds": seconds,
        "examples_per_s": len(users) * epochs / seconds,
        "epoch_loss": [e.loss for e in result.epochs],
        # A model that learnt nothing scores about log(batch) on in-batch softmax.
        "chance_loss": math.log(batch_size),
        "rss": rss.as_dict(),
    }


def embedding(
    model: TwoTower, prep: Prepared, batch_size: int, repeats: int
) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """Items/s of ``embed_items`` (every catalogue item, as the embed task calls it) vs a
    bare inference_mode forward over the same pre-built tensors."""
    data = prep.data
    id_rows = prep.vocab.item_id_row
    cats = category_rows(data.category, data.n_categories)
    content = data.content
    ids_t, cats_t, content_t = (torch.from_numpy(a) for a in (id_rows, cats, content))
    ab = interleave(
        lambda _: embed_items(model, id_rows, cats, content, batch_size=batch_size),
        lambda _: bare_embed_items(model, ids_t, cats_t, content_t, batch_size),
        repeats,
        warmup=1,
        min_total_s=_MIN_TOTAL_S,
    )
    vectors: npt.NDArray[np.float32] = ab.ours_value
    n = len(id_rows)
    ours_ips, bare_ips = n / ab.ours.median, n / ab.bare.median
    return vectors, {
        "items": n,
        "batch_size": batch_size,
        "ours": {**ab.ours.as_dict(), "items_per_s": ours_ips, "rss": ab.ours_rss.as_dict()},
        "bare": {**ab.bare.as_dict(), "items_per_s": bare_ips, "rss": ab.bare_rss.as_dict()},
        "throughput_ratio": ratio(ours_ips, bare_ips),
        "max_abs_diff": float(np.abs(vectors - ab.bare_value.numpy()).max()),
    }


def index_build(
    vectors: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], seed: int, repeats: int
) -> tuple[faiss.Index, str, dict[str, Any]]:
    """Seconds of ``build_index`` vs Faiss called directly, with the factory the pipeline
    chooses for this catalogue (``default_factory``); returns our index."""
    n, d = vectors.shape
    factory = default_factory(n, d)
    ab = interleave(
        lambda _: build_index(vectors, ids, factory, seed=seed),
        lambda _: direct_faiss_build(vectors, ids, factory, seed),
        repeats,
        warmup=0,
    )
    index: faiss.Index = ab.ours_value
    ours_bytes = int(faiss.serialize_index(index).size)
    bare_bytes = int(faiss.serialize_index(ab.bare_value).size)
    return (
        index,
        factory,
        {
            "factory": factory,
            "items": n,
            "dim": d,
            "ours": {**ab.ours.as_dict(), "rss": ab.ours_rss.as_dict()},
            "direct": {**ab.bare.as_dict(), "rss": ab.bare_rss.as_dict()},
            "time_ratio": ab.ratio,
            "bytes": ours_bytes,
            "bytes_per_item": ours_bytes / n,
            "direct_bytes_per_item": bare_bytes / n,
        },
    )
