"""The benchmark suite: every figure measured side by side in one run at one scale, written
as JSON and a markdown table (``python -m bench`` / ``make bench``).

Order: calibrate, generate, prepare, training throughput, train the model the online
figures use, embed, build the index, then tune / publish / load / serve; optionally the
whole nightly run in a child process; calibrate again.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench import steps
from bench.e2e import end_to_end
from bench.measure import RSS_METHOD, PeakRss, calibrate_gemm, read_threads, set_threads
from bench.plots import recall_latency_plot
from bench.recall_path import recall_path
from bench.report import render_markdown
from model.synthetic import SCALES, check_scale

__all__ = ["BenchConfig", "run_suite", "write_results"]

log = logging.getLogger(__name__)

# Training the online figures' model: the pipeline trains 5 epochs; bigger scales get
# fewer (their epochs are long and the vectors are already meaningful after one).
_ANN_EPOCHS = {"tiny": 5, "small": 3, "medium": 2, "large": 1}
# Steps whose single run takes minutes at these scales run once unless asked otherwise
# (generation: ~2 min at medium, ~5 at large; IVF4000 k-means on 1M vectors: minutes).
_SLOW_GENERATION = {"medium", "large"}
_SLOW_INDEX = {"large"}


class BenchConfig(BaseModel):
    """What the suite measures and how hard."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scale: str = Field("small", description=f"Synthetic scale, one of {sorted(SCALES)}.")
    seed: int = Field(0, description="Seed of the data, the models and every sample.")
    threads: int | None = Field(None, ge=1, description="torch and Faiss threads; None = cores.")
    repeats: int = Field(3, ge=1, description="Timed runs per side of each comparison.")
    gen_repeats: int | None = Field(
        None, ge=1, description="Data generation runs; None = repeats, 1 at medium and large."
    )
    index_repeats: int | None = Field(
        None, ge=1, description="Index builds per side; None = repeats, 1 at large."
    )
    train_steps: int = Field(200, ge=1, description="Steps per training-throughput run.")
    batch_size: int = Field(1024, ge=2, description="Training batch size (in-batch negatives).")
    warmup_steps: int = Field(20, ge=2, description="Untimed training steps per side first.")
    ann_epochs: int | None = Field(
        None, ge=1, description="Epochs of the online figures' model; None = by scale."
    )
    ann_max_examples: int | None = Field(
        None, ge=2, description="Cap on its training examples per epoch (seeded sample)."
    )
    embed_batch: int = Field(8192, ge=1, description="Item tower batch (the embed task's).")
    k: int = Field(100, ge=1, description="Top-k of latency and recall figures.")
    target_recall: float = Field(0.95, gt=0, le=1, description="Recall@k the tuning aims at.")
    tune_queries: int = Field(1000, ge=1, description="User vectors used to tune the index.")
    eval_queries: int = Field(1000, ge=1, description="Other users for held-out recall.")
    latency_users: int = Field(1000, ge=1, description="Users timed one request at a time.")
    batch_queries: int = Field(10_000, ge=1, description="Users in one batched search call.")
    e2e: bool = Field(True, description="Also time `towerflow run --scale` in a subprocess.")
    e2e_timeout_s: float = Field(7200, gt=0, description="Kill the end-to-end run after this.")

    @field_validator("scale")
    @classmethod
    def _known_scale(cls, v: str) -> str:
        return check_scale(v)

    @property
    def generation_runs(self) -> int:
        return self.gen_repeats or (1 if self.scale in _SLOW_GENERATION else self.repeats)

    @property
    def index_runs(self) -> int:
        return self.index_repeats or (1 if self.scale in _SLOW_INDEX else self.repeats)

    @property
    def epochs_for_ann(self) -> int:
        return self.ann_epochs or _ANN_EPOCHS[self.scale]


def _environment(threads: dict[str, int]) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "threads": threads,
        "rss_method": RSS_METHOD,
    }


def run_suite(cfg: BenchConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Run every benchmark of ``cfg`` and return the results (JSON-ready).

    ``workdir`` holds the temporary version store and the end-to-end run (default: a
    temporary folder removed afterwards).
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="towerflow-bench-") as tmp:
            return run_suite(cfg, Path(tmp))
    started = time.perf_counter()
    threads = set_threads(cfg.threads)
    res: dict[str, Any] = {"config": cfg.model_dump(mode="json")}
    res["environment"] = _environment(threads)
    res["calibration"] = {
        "gemm_gflops_start": calibrate_gemm(),
        "loadavg_1m_start": os.getloadavg()[0],
    }
    memory: dict[str, Any] = {}
    reps = cfg.repeats

    log.info("bench %s: data generation (%d runs)", cfg.scale, cfg.generation_runs)
    raw, res["generation"] = steps.generation(cfg.scale, cfg.seed, cfg.generation_runs)
    memory["generation"] = res["generation"]["rss"]
    prep, prepared = steps.prepare(raw)
    del raw
    memory["prepare"] = prepared["rss"]
    res["dataset"] = {k: v for k, v in prepared.items() if k != "rss"}

    log.info("bench %s: training throughput (%d steps x %d)", cfg.scale, cfg.train_steps, reps)
    res["training"] = steps.training(
        prep, cfg.train_steps, cfg.batch_size, cfg.warmup_steps, reps, cfg.seed
    )
    memory["train (ours)"] = res["training"]["ours"]["rss"]
    memory["train (plain)"] = res["training"]["plain"]["rss"]

    log.info("bench %s: training the model for the online figures", cfg.scale)
    model, res["ann_model"] = steps.train_for_ann(
        prep, cfg.epochs_for_ann, cfg.ann_max_examples, cfg.batch_size, cfg.seed
    )
    memory["train for online figures"] = res["ann_model"]["rss"]

    log.info("bench %s: item embedding", cfg.scale)
    vectors, res["embedding"] = steps.embedding(model, prep, cfg.embed_batch, reps)
    memory["embed (ours)"] = res["embedding"]["ours"]["rss"]
    memory["embed (bare)"] = res["embedding"]["bare"]["rss"]

    log.info("bench %s: index build (%d runs)", cfg.scale, cfg.index_runs)
    index, _factory, res["index"] = steps.index_build(
        vectors, prep.data.item_id, cfg.seed, cfg.index_runs
    )
    memory["index build (ours)"] = res["index"]["ours"]["rss"]
    memory["index build (direct)"] = res["index"]["direct"]["rss"]

    log.info("bench %s: tune, publish, load, serve", cfg.scale)
    with PeakRss() as rss:
        res["recall"] = recall_path(
            prep,
            model,
            vectors,
            index,
            workdir=workdir,
            k=cfg.k,
            target_recall=cfg.target_recall,
            tune_queries=cfg.tune_queries,
            eval_queries=cfg.eval_queries,
            latency_users=cfg.latency_users,
            batch_queries=cfg.batch_queries,
            repeats=reps,
            seed=cfg.seed,
            config=res["config"],
        )
    memory["publish + load version"] = res["recall"]["publish_load_rss"]
    memory["tune + publish + serve (all)"] = rss.as_dict()
    res["memory"] = memory
    del prep, model, vectors, index

    if cfg.e2e:
        log.info("bench %s: end to end (towerflow run)", cfg.scale)
        res["e2e"] = end_to_end(cfg.scale, threads["requested"], workdir / "e2e", cfg.e2e_timeout_s)
    else:
        res["e2e"] = None
    res["calibration"]["gemm_gflops_end"] = calibrate_gemm()
    res["calibration"]["loadavg_1m_end"] = os.getloadavg()[0]
    res["environment"]["threads_at_end"] = read_threads()
    res["suite_seconds"] = time.perf_counter() - started
    return res


def write_results(results: dict[str, Any], json_path: Path) -> tuple[Path, str]:
    """Write ``json_path`` and the markdown table next to it (``.md``); returns the
    markdown path and text."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN or infinite figure is a bug to see, not JSON to write.
    json_path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    text = render_markdown(results)
    plot = recall_latency_plot(results, json_path.with_name(json_path.stem + "-recall-latency.png"))
    if plot is not None:
        text += f"\n![Recall vs single-query latency of each tuning trial]({plot.name})\n"
    md_path = json_path.with_suffix(".md")
    md_path.write_text(text)
    return md_path, text
