"""Summarise the real-log runs over split seeds: mean ± std of test Recall@10 / NDCG@10 of
what validation chose (the ladder's rung, ``towerflow tune``'s recipe) next to EASE and
popularity from the same splits.

``make real-seeds`` runs, for each seed S, ``towerflow evaluate --ablation --split-seed S``
(writing ``DIR/seed-S/ablation.json``), ``towerflow tune --split-seed S`` (writing
``DIR/seed-S/tune/trials.json``) and ``towerflow tune --kind linear --split-seed S``
(``DIR/seed-S/tune-linear/trials.json``) and ``--kind hybrid``
(``DIR/seed-S/tune-hybrid/trials.json``), then this script::

    python -m bench.real_seeds DIR [--out FILE.md]

Nothing here chooses anything: the choices were made on validation by the commands; this
only reads their test figures. The std is the sample standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SeedRun", "load_runs", "main", "render"]

log = logging.getLogger(__name__)

_METRICS = ("recall@10", "ndcg@10")


# Tuner output folders under seed-S/ and their rows: the SGD recipe's search, the linear
# tower's (``towerflow tune --kind linear``) and the hybrid's (``--kind hybrid``).
_TUNES = {
    "tune": "towerflow tune, chosen on validation",
    "tune-linear": "towerflow tune --kind linear, chosen on validation",
    "tune-hybrid": "towerflow tune --kind hybrid, chosen on validation",
}


@dataclass(frozen=True)
class SeedRun:
    """One split seed's test figures per row label, the rung validation chose, and per
    tuner folder its (trials, minutes)."""

    seed: int
    rows: dict[str, dict[str, float]]
    chosen_rung: str | None
    tuning: dict[str, tuple[int, float]]


def _seed_of(folder: Path) -> int:
    return int(folder.name.removeprefix("seed-"))


def load_runs(root: Path) -> list[SeedRun]:
    """Every ``root/seed-S`` folder with an ablation.json (tune/trials.json optional)."""
    runs = []
    for folder in sorted(root.glob("seed-*"), key=_seed_of):
        ablation_file = folder / "ablation.json"
        if not ablation_file.is_file():
            log.warning("%s: no ablation.json, skipped", folder)
            continue
        ablation: dict[str, Any] = json.loads(ablation_file.read_text())
        rankers = ablation["rankers"]
        chosen = ablation.get("chosen")
        rows = {}
        if chosen is not None:
            rows["ladder, chosen on validation"] = rankers[chosen]
        # For reference: the rung the test set would pick (not a choice anyone could make).
        rungs = [r["name"] for r in ablation["runs"]]
        by_test = max(rungs, key=lambda n: rankers[n]["recall@10"])
        rows["ladder, best rung by test (reference only)"] = rankers[by_test]
        tuning: dict[str, tuple[int, float]] = {}
        for sub, label in _TUNES.items():
            tune_file = folder / sub / "trials.json"
            if not tune_file.is_file():
                continue
            tune: dict[str, Any] = json.loads(tune_file.read_text())
            if tune.get("rankers"):
                rows[label] = tune["rankers"]["tuned"]
            tuning[sub] = (len(tune["trials"]), tune["seconds"] / 60)
        for ref in ("ease", "itemknn", "popularity"):
            if ref in rankers:
                rows[ref] = rankers[ref]
        runs.append(SeedRun(_seed_of(folder), rows, chosen, tuning))
    return runs


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def render(runs: list[SeedRun]) -> str:
    """Markdown: mean ± std over seeds per row, each seed's figure, and the ratio of the
    mean to the classical baseline's."""
    if not runs:
        raise ValueError("no seed-*/ablation.json found")
    seeds = [r.seed for r in runs]
    labels = [label for label in runs[0].rows if all(label in r.rows for r in runs)]
    ref = next((x for x in ("ease", "itemknn") if x in labels), None)
    head = ["ranker"]
    for m in _METRICS:
        head += [f"{m} mean ± std", *(f"{m} seed {s}" for s in seeds)]
    if ref:
        head += [f"R@10 / {ref}", f"NDCG@10 / {ref}"]
    lines = [
        f"Split seeds {', '.join(map(str, seeds))}: test metrics (full ranking, train + "
        "validation masked); every choice made on validation.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label in labels:
        cells = [label]
        for m in _METRICS:
            values = [r.rows[label][m] for r in runs]
            cells += [_mean_std(values), *(f"{v:.4f}" for v in values)]
        if ref:
            for m in _METRICS:
                mine = statistics.mean(r.rows[label][m] for r in runs)
                base = statistics.mean(r.rows[ref][m] for r in runs)
                cells.append(f"{mine / base:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    chosen = ", ".join(f"seed {r.seed}: `{r.chosen_rung}`" for r in runs)
    lines += ["", f"Rung chosen on validation: {chosen}."]
    for sub in _TUNES:
        spent = ", ".join(
            f"seed {r.seed}: {r.tuning[sub][0]} trials in {r.tuning[sub][1]:.1f} min"
            for r in runs
            if sub in r.tuning
        )
        if spent:
            lines.append(f"Tuning (`{sub}/`): {spent}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder holding seed-S/ subfolders")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = render(load_runs(args.root))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
    sys.stdout.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
