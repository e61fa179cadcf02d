"""The run report's plots, rendered headless (matplotlib's Agg backend) to PNG bytes:
loss per epoch, Recall@K vs K per ranker, and headline metrics across versions.

Pure functions of plain data (no files, no Prefect): the report task stores the bytes with
the version, ``towerflow report`` embeds them in its HTML.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot's import

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["figure", "history_plot", "loss_plot", "png", "recall_curve_plot"]

_SIZE = (6.4, 3.8)
_DPI = 110
# Fixed colours per ranker, so the same line looks the same in every plot and every night.
_COLOURS = {
    "model": "#1f77b4",
    "oracle": "#7f7f7f",
    "popularity": "#ff7f0e",
    "ease": "#2ca02c",
    "itemknn": "#2ca02c",
}


def figure() -> tuple[Figure, Axes]:
    """A new figure and axes at the reports' size and resolution (headless)."""
    return plt.subplots(figsize=_SIZE, dpi=_DPI)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (tight layout); closes it."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def loss_plot(
    epoch_loss: Sequence[float],
    epoch_validation: Sequence[float | None] = (),
    validation_metric: str = "validation",
    best_epoch: int | None = None,
) -> bytes:
    """Training loss per epoch (left axis) and, when measured, the validation metric
    (right axis) with the kept epoch marked. Raises ``ValueError`` without epochs."""
    if not epoch_loss:
        raise ValueError("no epochs to plot")
    epochs = list(range(1, len(epoch_loss) + 1))
    fig, ax = figure()
    ax.plot(epochs, epoch_loss, "o-", color=_COLOURS["model"], label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean per step)")
    ax.set_xticks(epochs)
    ax.grid(True, linewidth=0.3)
    val = [(e, v) for e, v in zip(epochs, epoch_validation, strict=False) if v is not None]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), "s--", color="#d62728", label=validation_metric)
        ax2.set_ylabel(f"validation {validation_metric}")
        if best_epoch is not None:
            ax2.axvline(best_epoch, color="#d62728", linewidth=0.8, linestyle=":")
        ax2.legend(loc="upper center", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Training: loss per epoch")
    return png(fig)


def recall_curve_plot(curves: Mapping[str, Mapping[int, float]]) -> bytes:
    """Recall@K against K (log scale) for each ranker. Raises ``ValueError`` when empty."""
    if not curves or not any(curves.values()):
        raise ValueError("no Recall@K curve to plot")
    fig, ax = figure()
    for name, curve in curves.items():
        ks = sorted(curve)
        values = [curve[k] for k in ks]
        style = "--" if name == "oracle" else "-"
        ax.plot(ks, values, style, marker="o", color=_COLOURS.get(name), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K (log scale)")
    ax.set_ylabel("Recall@K (test, full ranking)")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Recall@K vs K: model, baselines, oracle")
    return png(fig)


def _when(version_id: str) -> str:
    """`v20261129T190102123Z-ab12cd` -> `2026-11-29 19:01` (ids are creation times)."""
    v = version_id
    if len(v) >= 14 and v[0] == "v" and v[9] == "T" and v[1:9].isdigit():
        return f"{v[1:5]}-{v[5:7]}-{v[7:9]} {v[10:12]}:{v[12:14]}"
    return v[:16]


def history_plot(history: Sequence[Mapping[str, Any]], metric: str) -> bytes:
    """``metric`` of each ranker across versions, oldest first; ``history`` entries are
    ``{"version_id", "metrics": {ranker: {metric: value}}}``. Raises ``ValueError`` when
    no entry has the metric."""
    rows = [h for h in history if any(metric in m for m in h.get("metrics", {}).values())]
    if not rows:
        raise ValueError(f"no version in the history has {metric!r}")
    fig, ax = figure()
    x = list(range(len(rows)))
    names = sorted({n for h in rows for n in h["metrics"]}, key=lambda n: n != "model")
    for name in names:
        ys = [h["metrics"].get(name, {}).get(metric) for h in rows]
        pts = [(i, y) for i, y in zip(x, ys, strict=True) if y is not None]
        if pts:
            style = "--" if name == "oracle" else "-"
            xs, vals = zip(*pts, strict=True)
            ax.plot(xs, vals, style, marker="o", color=_COLOURS.get(name), label=name)
    labels = [_when(str(h["version_id"])) for h in rows]
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"test {metric}")
    ax.set_ylim(bottom=0)
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} across published versions")
    return png(fig)
