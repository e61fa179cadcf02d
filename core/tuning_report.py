"""What ``towerflow tune`` writes: the trial history as a markdown table and a plot, the
test table of the base and tuned recipes beside the references, and the tuned config as
a YAML file that ``towerflow run --config`` takes.

Pure functions of a ``core.tuning.TuneResult`` (and the base config's raw mapping); the
CLI writes their output through ``storage``.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from core.plots import figure, png
from core.tuning import TuneResult

__all__ = ["render_test_table", "render_trials", "trials_plot", "tuned_config_yaml"]

# Parameters in the order the trial table shows them.
_PARAMS = (
    "temperature",
    "lr",
    "sparse_lr",
    "embedding_dim",
    "id_dim",
    "hidden",
    "item_bias",
    "batch_size",
    "uniform_negatives",
    "id_dropout",
    "dropout",
    "weight_decay",
    "id_l2",
    "patience",
    # The linear tower's space (core.tuning_space).
    "rank",
    "linear_l2",
    "linear_dropout",
)
_TEST_COLUMNS = ("recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def render_trials(result: TuneResult) -> str:
    """Markdown: one row per trial (number, state, validation metric, epochs run and
    kept, seconds, parameters), the chosen trial marked; then the search's totals."""
    metric = result.validation_metric
    params = [p for p in _PARAMS if any(p in t.params for t in result.trials)]
    head = ["trial", "state", f"validation {metric}", "epochs (best)", "s", *params]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in result.trials:
        mark = " ✓" if t.number == result.best_number else ""
        base = " (base)" if t.number == 0 else ""
        val = "" if t.validation is None else f"{t.validation:.4f}"
        kept = "" if t.best_epoch is None else f" ({t.best_epoch})"
        cells = [f"{t.number}{base}{mark}", t.state, val, f"{t.epochs}{kept}", f"{t.seconds:.0f}"]
        cells += [_cell(t.params.get(p)) for p in params]
        lines.append("| " + " | ".join(cells) + " |")
    states = [t.state for t in result.trials]
    best = result.best
    lines += [
        "",
        f"{len(states)} trials in {result.seconds / 60:.1f} min ({states.count('complete')} "
        f"complete, {states.count('pruned')} pruned, {states.count('fail')} failed). "
        f"Chosen on validation: trial {best.number}"
        + (" (the base recipe)" if best.number == 0 else "")
        + f", {metric} {best.validation:.4f}"
        + (
            f" vs the base recipe's {result.base.validation:.4f}."
            if result.base.validation is not None and best.number != 0
            else "."
        ),
    ]
    return "\n".join(lines)


def render_test_table(result: TuneResult) -> str:
    """Markdown: test metrics of the base recipe, the tuned recipe and the references,
    over the same users; empty when the result was not evaluated."""
    if not result.rankers:
        return ""
    first = next(iter(result.rankers.values()))
    cols = [c for c in _TEST_COLUMNS if c in first]
    lines = [
        f"Protocol `{result.protocol}`, snapshot `{result.snapshot_id}`: {result.n_users:,} "
        f"test users, full ranking over {result.n_items:,} items (train + validation masked); "
        "read once, after the search.",
        "",
        "| ranker | " + " | ".join(cols) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for name, metrics in result.rankers.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in cols) + " |")
    if result.baseline_tuning:
        tried = ", ".join(f"{k}: {v:.4f}" for k, v in result.baseline_tuning.items())
        lines += ["", f"Classical baseline regularisation chosen on validation ({tried})."]
    return "\n".join(lines)


def trials_plot(result: TuneResult) -> bytes:
    """PNG: each trial's validation metric (complete: dots; pruned: crosses at the last
    epoch reached; the base recipe: a square) and the running best as a step line."""
    fig, ax = figure()
    style = {"complete": ("o", "#1f77b4"), "pruned": ("x", "#7f7f7f")}
    for state, (marker, colour) in style.items():
        pts = [(t.number, t.validation) for t in result.trials if t.state == state and t.validation]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker, color=colour, linestyle="", label=state)
    if result.base.validation is not None:
        ax.plot([0], [result.base.validation], "s", color="#ff7f0e", label="base recipe")
    running, best = [], float("-inf")
    for t in result.trials:
        if t.state == "complete" and t.validation is not None:
            best = max(best, t.validation)
        running.append(best if best > float("-inf") else None)
    steps = [(t.number, b) for t, b in zip(result.trials, running, strict=True) if b is not None]
    if steps:
        ax.step(*zip(*steps, strict=True), where="post", color="#2ca02c", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {result.validation_metric}")
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Tuning: validation metric per trial")
    return png(fig)


def tuned_config_yaml(raw: dict[str, Any], result: TuneResult, header: str) -> str:
    """The base config's mapping ``raw`` with its ``tower`` and ``train`` sections replaced
    by the tuned recipe (every field written out), under a comment ``header``.

    Everything else (data, evaluation, index, runtime) is kept as the user wrote it, so
    the file trains the same data the search did."""
    out = copy.deepcopy(raw)
    out["tower"] = result.tower.model_dump(mode="json")
    out["train"] = result.train.model_dump(mode="json")
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + yaml.safe_dump(out, sort_keys=False)
