"""The benchmark suite end to end at the tiny scale: every section present and sane.

Benchmarks are not timed tests: nothing here asserts a speed, only that each figure exists,
is a positive finite number where it is a time or a ratio, and that recall is in [0, 1].
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.__main__ import app
from bench.baselines import direct_faiss_build
from bench.measure import PeakRss, interleave
from bench.suite import BenchConfig, run_suite, write_results
from model.index import build_index, search, set_search_params

TINY = BenchConfig(
    scale="tiny",
    threads=1,
    repeats=1,
    gen_repeats=1,
    train_steps=3,
    batch_size=128,
    warmup_steps=2,
    ann_epochs=1,
    tune_queries=100,
    eval_queries=100,
    latency_users=30,
    batch_queries=100,
    e2e=False,
)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    """(results read back from the JSON file, markdown file text, markdown returned)."""
    out = tmp_path_factory.mktemp("bench")
    results = run_suite(TINY, workdir=out / "work")
    md_path, text = write_results(results, out / "results" / "bench-tiny.json")
    loaded = json.loads((out / "results" / "bench-tiny.json").read_text())
    return loaded, md_path.read_text(), text


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_every_section_is_present(outputs: tuple[dict[str, Any], str, str]) -> None:
    res, _, _ = outputs
    for section in (
        "config",
        "environment",
        "calibration",
        "generation",
        "dataset",
        "training",
        "ann_model",
        "embedding",
        "index",
        "recall",
        "memory",
    ):
        assert res[section], section
    assert res["e2e"] is None  # skipped by the flag


def test_ratios_and_throughputs_are_positive_finite(
    outputs: tuple[dict[str, Any], str, str],
) -> None:
    res, _, _ = outputs
    tr, emb, idx, rec = res["training"], res["embedding"], res["index"], res["recall"]
    lat, bat = rec["latency"], rec["batched"]
    for value in (
        res["generation"]["median_s"],
        res["generation"]["interactions_per_s"],
        tr["ours"]["examples_per_s"],
        tr["plain"]["examples_per_s"],
        tr["throughput_ratio"],
        emb["ours"]["items_per_s"],
        emb["bare"]["items_per_s"],
        emb["throughput_ratio"],
        idx["time_ratio"],
        idx["bytes_per_item"],
        lat["full"]["p50_ms"],
        lat["bare"]["p99_ms"],
        lat["tower"]["p50_ms"],
        lat["p50_ratio"],
        lat["p99_ratio"],
        bat["ours"]["qps"],
        bat["bare"]["qps"],
        bat["qps_ratio"],
        bat["with_user_tower"]["qps"],
        res["calibration"]["gemm_gflops_start"],
        res["calibration"]["gemm_gflops_end"],
    ):
        assert _positive(value), value


def test_both_sides_did_the_same_work(outputs: tuple[dict[str, Any], str, str]) -> None:
    res, _, _ = outputs
    tr = res["training"]
    # Same initial weights, batches and dropout draws: the same losses.
    assert tr["mean_loss_ours"] == pytest.approx(tr["mean_loss_plain"], rel=1e-4)
    assert tr["examples"] == TINY.train_steps * TINY.batch_size
    assert res["embedding"]["max_abs_diff"] <= 1e-5
    assert res["embedding"]["items"] == res["generation"]["items"]
    assert res["index"]["factory"] == "Flat"  # default_factory below 50k items


def test_recall_is_a_fraction_and_meets_the_target(
    outputs: tuple[dict[str, Any], str, str],
) -> None:
    rec = outputs[0]["recall"]
    for key in ("recall_tune_set", "recall_held_out", "recall_full_path"):
        assert 0.0 <= rec[key] <= 1.0, key
    assert rec["target_met"] and rec["recall_tune_set"] >= TINY.target_recall
    assert rec["k"] == TINY.k and rec["tune_queries"] > 0 and rec["eval_queries"] > 0


def test_threads_are_set_and_read_back(outputs: tuple[dict[str, Any], str, str]) -> None:
    env = outputs[0]["environment"]
    assert env["threads"]["torch"] == env["threads"]["faiss"] == 1
    assert env["threads_at_end"]["torch"] == env["threads_at_end"]["faiss"] == 1
    assert env["rss_method"]


def test_memory_is_reported_for_each_step(outputs: tuple[dict[str, Any], str, str]) -> None:
    memory = outputs[0]["memory"]
    for step in ("generation", "train (ours)", "embed (ours)", "index build (ours)"):
        assert memory[step]["peak_mib"] > 0
        assert memory[step]["over_start_mib"] >= 0


def test_markdown_has_every_section(outputs: tuple[dict[str, Any], str, str]) -> None:
    _, md_file, md_text = outputs
    assert md_file == md_text
    for needle in (
        "# towerflow benchmark: scale `tiny`",
        "## Offline steps",
        "| data generation",
        "| training throughput",
        "| item embedding",
        "| index build",
        "## Online",
        "single-user latency p50",
        "single-user latency p99",
        "batched QPS",
        "Recall@100 vs exact search",
        "## Memory",
        "bytes per item",
        "## End to end",
    ):
        assert needle in md_text, needle
    assert "nan" not in md_text.lower().split()


def test_peak_rss_sees_an_allocation() -> None:
    with PeakRss() as rss:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert rss.peak_mib >= rss.start_mib
    if rss.exact:
        assert rss.delta_mib >= 48


def test_interleave_alternates_and_keeps_values() -> None:
    calls: list[str] = []
    ab = interleave(
        lambda p: calls.append("a") or p, lambda p: calls.append("b") or -p, 2, 1, lambda: 3
    )
    assert calls == ["a", "b", "a", "b", "b", "a"]
    assert (ab.ours_value, ab.bare_value) == (3, -3)
    assert len(ab.ours.seconds) == len(ab.bare.seconds) == 2 and ab.ratio > 0


def test_direct_faiss_build_matches_build_index_on_ivf() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16)).astype(np.float32)
    x = centres[rng.integers(0, 20, 4000)] + 0.1 * rng.standard_normal((4000, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = rng.choice(100_000, 4000, replace=False).astype(np.int64)
    ours = build_index(x, ids, "IVF16,Flat", seed=3)
    direct = direct_faiss_build(x, ids, "IVF16,Flat", seed=3)
    for index in (ours, direct):
        set_search_params(index, nprobe=4)
    # Same factory, same training rows: the same index, the same answers.
    assert np.array_equal(search(ours, x[:50], 10)[1], search(direct, x[:50], 10)[1])


def test_cli_rejects_an_unknown_scale() -> None:
    result = CliRunner().invoke(app, ["--scale", "galactic", "--no-e2e"])
    assert result.exit_code == 2  # a bad option: the usage exit code (cli.errors)
    assert "unknown scale" in result.output


def test_cli_help_names_the_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for option in ("--scale", "--json", "--threads", "--repeats", "--e2e"):
        assert option in result.stdout


def test_python_m_bench_is_the_entry_point() -> None:
    """`make bench` runs `python -m bench`; the production CLI has no bench command."""
    from cli.app import app as towerflow

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--scale" in result.stdout and "--no-e2e" in result.stdout
    assert "bench" not in {c.name for c in towerflow.registered_commands}


@pytest.mark.slow
def test_end_to_end_times_a_real_nightly_run(tmp_path: Path) -> None:
    from bench.e2e import end_to_end

    e2e = end_to_end("tiny", threads=1, workdir=tmp_path, timeout_s=900)
    assert _positive(e2e["flow_s"]) and e2e["wall_s"] >= e2e["flow_s"]
    assert _positive(e2e["wall_over_flow"]) and e2e["peak_rss_mib"] > 0
    assert e2e["version"].startswith("v")
    # Step times from the run's Prefect database: every nightly task, none longer than the flow.
    assert {"train-model", "embed-items", "evaluate", "publish-version"} <= set(e2e["steps"])
    assert 0 < e2e["steps"]["train-model"] <= e2e["flow_s"]


def test_recall_latency_plot_is_a_png_of_the_trials(tmp_path: Path) -> None:
    from bench.plots import recall_latency_plot

    trials = [
        {"nprobe": n, "recall": r, "p50_ms": t, "p99_ms": 2 * t}
        for n, r, t in ((1, 0.6, 0.05), (2, 0.8, 0.07), (4, 0.96, 0.1), (8, 0.99, 0.2))
    ]
    results = {
        "config": {"scale": "medium"},
        "index": {"factory": "IVF400,Flat"},
        "recall": {"knob": "nprobe", "knob_value": 4, "k": 100, "target_recall": 0.95,
                   "trials": trials},
    }  # fmt: skip
    path = recall_latency_plot(results, tmp_path / "plot.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000  # a rendered figure, not an empty canvas
    exact = {**results, "recall": {**results["recall"], "knob": None, "trials": []}}
    assert recall_latency_plot(exact, tmp_path / "none.png") is None
