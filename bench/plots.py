"""Headless plots of benchmark results (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["recall_latency_plot"]


def recall_latency_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Recall@k vs single-query p50 / p99 latency of every tuning trial of the index,
    with the chosen setting marked; None when the index has no knob (exact search)."""
    rec = results.get("recall") or {}
    knob, trials = rec.get("knob"), rec.get("trials") or []
    if knob is None or not trials or "p50_ms" not in trials[0]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    recall = [t["recall"] for t in trials]
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
        ax.plot([t[key] for t in trials], recall, style, label=key.split("_")[0])
    for t in trials:
        ax.annotate(f"{knob} {int(t[knob])}", (t["p50_ms"], t["recall"]), fontsize=7,
                    xytext=(4, -10), textcoords="offset points")  # fmt: skip
    chosen = next((t for t in trials if int(t[knob]) == rec.get("knob_value")), None)
    if chosen is not None:
        ax.plot(chosen["p50_ms"], chosen["recall"], "r*", markersize=14, label="chosen")
    ax.axhline(rec["target_recall"], color="grey", linewidth=0.8, linestyle=":", label="target")
    ax.set_xscale("log")
    ax.set_xlabel("single-query latency (ms, log scale)")
    ax.set_ylabel(f"Recall@{rec['k']} vs exact search")
    scale = results.get("config", {}).get("scale", "?")
    factory = results.get("index", {}).get("factory", "index")
    ax.set_title(f"{factory} at scale {scale}: recall vs single-query latency")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
