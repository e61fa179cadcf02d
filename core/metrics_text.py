"""Plain-text views of a version's ``metrics.json``: the rankers-by-metrics table and the
summary ``towerflow run`` prints after publishing."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["metrics_table", "run_summary"]

_FAMILIES: Final = ("recall", "ndcg", "hit_rate", "mrr")
_RANKERS: Final = (
    "model",
    "popularity",
    "ease",
    "itemknn",
    "oracle",
    "random",
    "category popularity",
    "user's categories",
)


def metrics_table(metrics: dict[str, Any]) -> str:
    """Rankers as rows (model first), metrics as columns grouped by family then K.

    ``metrics["rankers"]`` maps a ranker name to ``{"recall@50": 0.31, ...}``; keys of
    other families (e.g. ``coverage``) are left out.
    """
    rankers: dict[str, dict[str, float]] = metrics["rankers"]
    names = sorted(
        (k for k in next(iter(rankers.values())) if k.split("@")[0] in _FAMILIES),
        key=lambda n: (_FAMILIES.index(n.split("@")[0]), int(n.split("@")[1])),
    )
    order = sorted(rankers, key=lambda r: _RANKERS.index(r) if r in _RANKERS else len(_RANKERS))
    width = max(len(n) for n in names) + 2
    first = max(12, *(len(r) + 2 for r in rankers))
    lines = ["ranker".ljust(first) + "".join(n.rjust(width) for n in names)]
    for ranker in order:
        values = rankers[ranker]
        lines.append(ranker.ljust(first) + "".join(f"{values[n]:.4f}".rjust(width) for n in names))
    return "\n".join(lines)


def run_summary(version_id: str, seconds: float, metrics: dict[str, Any]) -> str:
    """What ``towerflow run`` prints once a version is published: the test metrics table,
    the model's lift over popularity on the gate metric (and share of the oracle), and
    the cold-start table when the run measured one."""
    rankers = metrics["rankers"]
    gate = metrics["gate_metric"]
    model = rankers["model"][gate]
    lines = [
        f"\npublished version {version_id} in {seconds:.1f} s",
        f"test metrics ({metrics['n_users']} users, {metrics['n_items']} items):",
        metrics_table(metrics),
        f"\nmodel {gate}: {model / max(rankers['popularity'][gate], 1e-12):.2f}x popularity",
    ]
    if "oracle" in rankers:
        lines.append(
            f"model {gate}: {model / max(rankers['oracle'][gate], 1e-12):.0%} of the oracle"
        )
    cold = metrics.get("cold_start")
    if cold:
        lines.append(
            f"\ncold start: {cold['n_items']} items first seen at test time, ranked among "
            f"themselves for {cold['n_users']} users (content features only):"
        )
        lines.append(metrics_table({"rankers": cold["rankers"]}))
    return "\n".join(lines)
