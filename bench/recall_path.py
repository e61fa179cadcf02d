"""The online figures, on a real published version: the index tuned as the pipeline tunes
it, published through ``storage`` into a temporary store and loaded with
``Recaller.load``; then single-user latency of ``Recaller.recall`` vs bare
``index.search``, batched QPS, and Recall@k of the tuned index vs exact search."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import torch

from bench.measure import PeakRss, Samples, interleave, percentiles, ratio
from bench.steps import Prepared
from core.recall import Recaller
from core.versionio import write_embeddings, write_serving_tables
from model.ann import exact_topk, recall_against, tune_index
from model.embed import embed_users
from model.index import search, tune_blas_threshold
from model.towers import TwoTower
from storage import Layout, Lineage, VersionFiles, VersionStore, save_index, save_model

__all__ = ["publish_version", "recall_path"]

log = logging.getLogger(__name__)

_LATENCY_WARMUP = 20
# Batched searches repeat until each side has about this many seconds of samples.
_MIN_TOTAL_S = 2.0


def publish_version(
    root: Path,
    prep: Prepared,
    model: TwoTower,
    vectors: npt.NDArray[np.float32],
    index: faiss.Index,
    config: dict[str, Any],
) -> VersionStore:
    """Stage and publish a version (the files the train, embed and index tasks write) as
    CURRENT of a fresh store at ``root``."""
    store = VersionStore(Layout(root))
    version_id = store.new_version_id()
    staging = store.begin(version_id)
    save_model(staging, model.state_dict(), model.spec.model_dump(mode="json"))
    write_serving_tables(staging, prep.data, prep.vocab)
    write_embeddings(staging, prep.data.item_id, vectors)
    save_index(staging / VersionFiles.INDEX, index)
    store.publish(
        version_id,
        expected_current=None,
        config=config,
        lineage=Lineage(data_snapshot=None, parent_version=None),
        embedding_dim=int(vectors.shape[1]),
        metric="inner_product",
        item_count=len(vectors),
        extra={"source": "bench"},
    )
    return store


def _query_users(prep: Prepared, n: int, seed: int) -> npt.NDArray[np.int64]:
    """Positions of a seeded sample of ``n`` users (all when there are fewer)."""
    rng = np.random.default_rng(seed)
    n_users = prep.data.n_users
    return np.sort(rng.choice(n_users, min(n, n_users), replace=False))


def _user_vectors(
    model: TwoTower, prep: Prepared, pos: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    return embed_users(model, prep.vocab.user_id_row[pos], prep.data.profile[pos])


def _single_user_latency(
    recaller: Recaller,
    user_ids: npt.NDArray[np.int64],
    vecs: npt.NDArray[np.float32],
    id_rows: npt.NDArray[np.int64],
    profiles: npt.NDArray[np.float32],
    k: int,
    repeats: int,
) -> dict[str, Any]:
    """p50 / p99 ms per round of: the full path, bare ``index.search`` on the precomputed
    vector, the user tower alone (batch 1), and bare tower + bare search (the full path's
    floor); medians over rounds.

    The calls for a user run back to back, so they see the same machine state, in an
    order that rotates from user to user: the first call for a user reads that user's
    inverted lists from memory and the later ones find them in cache (~15 us at 100k
    items), so a fixed order would charge that to whichever call always runs first."""
    index, model = recaller.index, recaller.model

    def tower(j: int) -> torch.Tensor:
        with torch.inference_mode():
            return model.forward_user(
                torch.tensor([int(id_rows[j])], dtype=torch.int64),
                torch.from_numpy(profiles[j : j + 1]),
            )

    calls = {
        # What the HTTP service calls: tower + search + ID mapping + categories, as arrays.
        "full": lambda j: recaller.recall(int(user_ids[j]), k=k, exclude_seen=False),
        "bare": lambda j: index.search(vecs[j : j + 1], k),
        "tower": tower,
        # The floor of the full path: bare tower forward, then bare Faiss search.
        "tower_search": lambda j: index.search(tower(j).numpy(), k),
    }
    for j in range(min(_LATENCY_WARMUP, len(user_ids))):
        for call in calls.values():
            call(j)
    names = list(calls)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for r in range(repeats):
        times: dict[str, list[float]] = {name: [] for name in calls}
        for j in range(len(user_ids)):
            first = (j + r) % len(names)  # each call leads for a quarter of the users
            for name in names[first:] + names[:first]:
                call = calls[name]
                start = time.perf_counter()
                call(j)
                times[name].append((time.perf_counter() - start) * 1e3)
        for name, ms in times.items():
            rounds[name].append(percentiles(ms))
    out: dict[str, Any] = {"users": len(user_ids), "rounds": repeats}
    for name, pairs in rounds.items():
        out[name] = {
            "p50_ms": float(np.median([p[0] for p in pairs])),
            "p99_ms": float(np.median([p[1] for p in pairs])),
            "rounds_p50_ms": [round(p[0], 4) for p in pairs],
        }
    out["p50_ratio"] = ratio(out["full"]["p50_ms"], out["bare"]["p50_ms"])
    out["p99_ratio"] = ratio(out["full"]["p99_ms"], out["bare"]["p99_ms"])
    out["p50_ratio_tower_search"] = ratio(out["full"]["p50_ms"], out["tower_search"]["p50_ms"])
    out["p99_ratio_tower_search"] = ratio(out["full"]["p99_ms"], out["tower_search"]["p99_ms"])
    return out


def _batched(
    model: TwoTower, prep: Prepared, index: faiss.Index, n: int, k: int, repeats: int, seed: int
) -> dict[str, Any]:
    """QPS of one search call over ``n`` users: ``model.index.search`` vs bare
    ``index.search`` on the same precomputed vectors, and with the user tower included."""
    pos = _query_users(prep, n, seed + 2)
    rows, profiles = prep.vocab.user_id_row[pos], prep.data.profile[pos]
    queries = embed_users(model, rows, profiles)
    ab = interleave(
        lambda _: search(index, queries, k),
        lambda _: index.search(queries, k),
        repeats,
        min_total_s=_MIN_TOTAL_S,
    )
    with_tower = Samples()
    for _ in range(repeats):
        start = time.perf_counter()
        search(index, embed_users(model, rows, profiles), k)
        with_tower.seconds.append(time.perf_counter() - start)
    nq = len(pos)
    return {
        "queries": nq,
        "ours": {**ab.ours.as_dict(), "qps": nq / ab.ours.median},
        "bare": {**ab.bare.as_dict(), "qps": nq / ab.bare.median},
        "qps_ratio": ratio(ab.bare.median, ab.ours.median),
        "with_user_tower": {**with_tower.as_dict(), "qps": nq / with_tower.median},
    }


def _full_path_ids(
    recaller: Recaller, user_ids: npt.NDArray[np.int64], k: int
) -> npt.NDArray[np.int64]:
    """(q, k) item IDs ``Recaller.recall`` returns (seen items included), -1 padded."""
    out = np.full((len(user_ids), k), -1, np.int64)
    for j, uid in enumerate(user_ids):
        got = recaller.recall(int(uid), k=k, exclude_seen=False).item_ids
        out[j, : len(got)] = got
    return out


def recall_path(
    prep: Prepared,
    model: TwoTower,
    vectors: npt.NDArray[np.float32],
    index: faiss.Index,
    *,
    workdir: Path,
    k: int,
    target_recall: float,
    tune_queries: int,
    eval_queries: int,
    latency_users: int,
    batch_queries: int,
    repeats: int,
    seed: int,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Tune, publish, load and measure (see the module docstring)."""
    ids = prep.data.item_id
    k = min(k, len(ids))
    blas_threshold = tune_blas_threshold(vectors.shape[1])  # as the index task does
    # Disjoint seeded samples: tune on one, report recall on users tuning never saw.
    pos = _query_users(prep, tune_queries + eval_queries, seed)
    pos = np.random.default_rng(seed + 1).permutation(pos)
    n_tune = max(1, min(tune_queries, len(pos) // 2))
    tune_pos, eval_pos = np.sort(pos[:n_tune]), np.sort(pos[n_tune:])
    q_tune, q_eval = _user_vectors(model, prep, tune_pos), _user_vectors(model, prep, eval_pos)
    # sweep_after: a few values past the chosen one, for the recall-vs-latency plot.
    tuned = tune_index(
        index, q_tune, exact_topk(vectors, ids, q_tune, k), k, target_recall, sweep_after=3
    )
    exact_eval = exact_topk(vectors, ids, q_eval, k)
    held_out = recall_against(search(index, q_eval, k)[1], exact_eval)

    with PeakRss() as rss:
        start = time.perf_counter()
        store = publish_version(workdir / "store", prep, model, vectors, index, config)
        publish_s = time.perf_counter() - start
        start = time.perf_counter()
        recaller = Recaller.load(store)
        load_s = time.perf_counter() - start
    ivf = faiss.try_extract_index_ivf(recaller.index)
    eval_ids = prep.data.user_id[eval_pos]
    full_recall = recall_against(_full_path_ids(recaller, eval_ids, k), exact_eval)

    lat = eval_pos[:latency_users]
    latency = _single_user_latency(
        recaller,
        prep.data.user_id[lat],
        q_eval[: len(lat)],
        prep.vocab.user_id_row[lat],
        prep.data.profile[lat],
        k,
        repeats,
    )
    return {
        "k": k,
        "target_recall": target_recall,
        "blas_threshold": blas_threshold,
        "knob": tuned.knob,
        "knob_value": tuned.value,
        "served_nprobe": int(ivf.nprobe) if ivf is not None else None,
        "trials": tuned.trials,
        "recall_tune_set": tuned.recall,
        "recall_held_out": held_out,
        "recall_full_path": full_recall,
        "tune_queries": len(tune_pos),
        "eval_queries": len(eval_pos),
        "target_met": tuned.met,
        "publish_s": publish_s,
        "load_s": load_s,
        "index_file_bytes": (store.open_current().path / VersionFiles.INDEX).stat().st_size,
        "publish_load_rss": rss.as_dict(),
        "latency": latency,
        "batched": _batched(recaller.model, prep, recaller.index, batch_queries, k, repeats, seed),
    }
