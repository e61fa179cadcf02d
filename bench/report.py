"""The suite's results as a markdown report: one table per section, ratios next to every
absolute figure."""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown"]


def _n(x: float) -> str:
    """A figure with sensible precision: 1,234,567 / 123.4 / 12.34 / 0.123."""
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _s(seconds: float) -> str:
    return f"{_n(seconds * 1e3)} ms" if seconds < 1 else f"{_n(seconds)} s"


def _x(r: float) -> str:
    return f"{r:.2f}x"


def _runs(side: dict[str, Any]) -> int:
    return len(side["samples_s"])


def _header(res: dict[str, Any]) -> list[str]:
    cfg, gen, env = res["config"], res["generation"], res["environment"]
    t, t_end, cal = env["threads"], env["threads_at_end"], res["calibration"]
    return [
        f"# towerflow benchmark: scale `{cfg['scale']}`",
        "",
        f"{gen['users']:,} users, {gen['items']:,} items, {gen['interactions']:,} interactions "
        f"({res['dataset']['train_examples']:,} training examples). Medians over runs; the two "
        "sides of each comparison run interleaved in one process. Threads: torch "
        f"{t['torch']}, Faiss {t['faiss']} (requested {t['requested']}, {t['cores']} cores; "
        f"read back at the end: torch {t_end['torch']}, Faiss {t_end['faiss']}). "
        f"Machine load gauge (numpy sgemm 1024³): {_n(cal['gemm_gflops_start'])} GFLOP/s at "
        f"the start, {_n(cal['gemm_gflops_end'])} at the end (lower = busier); 1-minute load "
        f"average {cal['loadavg_1m_start']:.2f} at the start, {cal['loadavg_1m_end']:.2f} at "
        "the end (above the thread count: other processes compete for the cores). "
        f"Suite wall time {_s(res['suite_seconds'])}.",
        "",
        "Time ratios are ours / bare (> 1: ours slower); throughput ratios are ours / bare "
        "(< 1: ours slower).",
        "",
    ]


def _offline(res: dict[str, Any]) -> list[str]:
    gen, tr, emb, idx, ann = (
        res["generation"],
        res["training"],
        res["embedding"],
        res["index"],
        res["ann_model"],
    )
    rows = [
        "## Offline steps",
        "",
        "| step | ours | bare library | ratio | runs / side |",
        "|---|---|---|---|---|",
        f"| data generation (`generate`) | {_s(gen['median_s'])} "
        f"({_n(gen['interactions_per_s'])} interactions/s) | - | - | {_runs(gen)} |",
        f"| training throughput (`train`, {tr['steps']} steps x {tr['batch_size']}, after "
        f"{tr['warmup_steps']} warm-up steps) | {_n(tr['ours']['examples_per_s'])} ex/s | "
        f"{_n(tr['plain']['examples_per_s'])} ex/s (plain loop) | "
        f"{_x(tr['throughput_ratio'])} throughput | {_runs(tr['ours'])} |",
        f"| item embedding (`embed_items`, {emb['items']:,} items, batch {emb['batch_size']}) "
        f"| {_n(emb['ours']['items_per_s'])} items/s | {_n(emb['bare']['items_per_s'])} "
        f"items/s (`inference_mode` forward) | {_x(emb['throughput_ratio'])} throughput "
        f"| {_runs(emb['ours'])} |",
        f"| index build (`build_index`, `{idx['factory']}`, {idx['items']:,} x {idx['dim']}) "
        f"| {_s(idx['ours']['median_s'])} | {_s(idx['direct']['median_s'])} (`index_factory` "
        f"+ `train` + `add_with_ids`) | {_x(idx['time_ratio'])} time | {_runs(idx['ours'])} |",
        "",
        f"Same work on both sides: mean training loss ours {tr['mean_loss_ours']:.4f} vs plain "
        f"{tr['mean_loss_plain']:.4f}; item vectors max |ours - bare| "
        f"{emb['max_abs_diff']:.2g}.",
        "",
        f"Model behind the online figures: `train` for {ann['epochs']} epoch(s) x "
        f"{ann['examples_per_epoch']:,} examples (of {ann['of_train_split']:,} in the training "
        f"split), {_s(ann['seconds'])} ({_n(ann['examples_per_s'])} ex/s); epoch loss "
        + " → ".join(f"{x:.3f}" for x in ann["epoch_loss"])
        + f" (chance ln(batch) = {ann['chance_loss']:.3f}).",
        "",
    ]
    return rows


def _online(res: dict[str, Any]) -> list[str]:
    rec = res["recall"]
    lat, bat = rec["latency"], rec["batched"]
    knob = (
        f"{rec['knob']} = {rec['knob_value']} (served index reads back nprobe "
        f"{rec['served_nprobe']})"
        if rec["knob"]
        else "exact search, no knob"
    )
    trials = ", ".join(
        f"{rec['knob']} {int(t[rec['knob']])}: {t['recall']:.3f}"
        + (f" @ p50 {t['p50_ms']:.3f} ms" if "p50_ms" in t else "")
        for t in rec["trials"]
    )
    return [
        f"## Online: top-{rec['k']} from a published version (`{res['index']['factory']}`, {knob})",
        "",
        "| figure | full path (`Recaller.recall`) | bare `index.search` | ratio |",
        "|---|---|---|---|",
        f"| single-user latency p50 ({lat['users']:,} users x {lat['rounds']} rounds) | "
        f"{_n(lat['full']['p50_ms'])} ms | {_n(lat['bare']['p50_ms'])} ms | "
        f"{_x(lat['p50_ratio'])} |",
        f"| single-user latency p99 | {_n(lat['full']['p99_ms'])} ms | "
        f"{_n(lat['bare']['p99_ms'])} ms | {_x(lat['p99_ratio'])} |",
        f"| of which user tower alone (batch 1), p50 / p99 | {_n(lat['tower']['p50_ms'])} / "
        f"{_n(lat['tower']['p99_ms'])} ms | - | - |",
        *(
            [
                f"| vs bare user tower + bare `index.search`, p50 / p99 | "
                f"{_n(lat['full']['p50_ms'])} / {_n(lat['full']['p99_ms'])} ms | "
                f"{_n(lat['tower_search']['p50_ms'])} / {_n(lat['tower_search']['p99_ms'])} ms | "
                f"{_x(lat['p50_ratio_tower_search'])} / {_x(lat['p99_ratio_tower_search'])} |"
            ]
            if "tower_search" in lat
            else []
        ),
        f"| batched QPS ({bat['queries']:,} users, one call; ours = `model.index.search`) | "
        f"{_n(bat['ours']['qps'])} | {_n(bat['bare']['qps'])} | {_x(bat['qps_ratio'])} "
        "throughput |",
        f"| batched QPS including the user tower (`embed_users` + search) | "
        f"{_n(bat['with_user_tower']['qps'])} | - | - |",
        "",
        f"| Recall@{rec['k']} vs exact search (target {rec['target_recall']}) | value |",
        "|---|---|",
        f"| tuning users ({rec['tune_queries']:,}) | {rec['recall_tune_set']:.4f} |",
        f"| held-out users ({rec['eval_queries']:,}), tuned index | {rec['recall_held_out']:.4f} |",
        f"| held-out users, through `Recaller.recall` | {rec['recall_full_path']:.4f} |",
        "",
        f"Tuning trials ({rec['knob'] or 'none'}: recall): {trials or 'exact index'}. "
        f"Faiss BLAS threshold {rec['blas_threshold']} (`tune_blas_threshold`, as the "
        f"pipeline sets it). Publish {_s(rec['publish_s'])}, `Recaller.load` "
        f"{_s(rec['load_s'])}.",
        "",
    ]


def _memory(res: dict[str, Any]) -> list[str]:
    idx, rec = res["index"], res["recall"]
    rows = [
        "## Memory",
        "",
        f"Index: {_n(idx['bytes_per_item'])} bytes per item (direct Faiss build "
        f"{_n(idx['direct_bytes_per_item'])}); index file {rec['index_file_bytes'] / 2**20:.1f}"
        " MiB.",
        "",
        "| step | peak RSS (MiB) | over the step's start (MiB) |",
        "|---|---|---|",
    ]
    for name, m in res["memory"].items():
        mark = "" if m["exact"] else " (lifetime peak)"
        rows.append(f"| {name} | {_n(m['peak_mib'])}{mark} | {_n(m['over_start_mib'])} |")
    rows += ["", f"Method: {res['environment']['rss_method']}", ""]
    return rows


def _e2e(res: dict[str, Any]) -> list[str]:
    e2e = res["e2e"]
    if e2e is None:
        return ["## End to end", "", "Skipped (`--e2e` to run `towerflow run` too).", ""]
    gate = e2e["gate_metric"]
    quality = ""
    if e2e["model_gate_value"] is not None and e2e["popularity_gate_value"]:
        quality = (
            f" Model {gate} {e2e['model_gate_value']:.4f} vs popularity "
            f"{e2e['popularity_gate_value']:.4f}."
        )
    return [
        "## End to end",
        "",
        "| figure | value |",
        "|---|---|",
        f"| `{e2e['command']}` wall time | {_s(e2e['wall_s'])} |",
        f"| of which the flow (as the CLI reports it) | {_s(e2e['flow_s'])} |",
        f"| wall / flow (process start, imports, Prefect's temporary server) | "
        f"{_x(e2e['wall_over_flow'])} |",
        f"| peak RSS (largest process, wait4) | {_n(e2e['peak_rss_mib'])} MiB |",
        "",
        f"Published {e2e['version']}.{quality}",
        "",
    ]


def render_markdown(res: dict[str, Any]) -> str:
    """The markdown report of ``bench.suite.run_suite``'s results."""
    parts = _header(res) + _offline(res) + _online(res) + _memory(res) + _e2e(res)
    return "\n".join(parts).rstrip() + "\n"
