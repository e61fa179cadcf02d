"""The corruption matrix: every file of a published version x {flip a byte, truncate,
delete} x {recommend, rollback, items publish, nightly, API at start, API hot swap}, each
cell on its own copy of one base store, checking that no version is ever published on
damaged bytes and no request is answered from them.

Base store (built once, tiny scale): nightly N1, nightly N2, then an items event (a delta)
compacted, so CURRENT is the items version I on top of N2 (sharing N2's unchanged files as
hard links);
N1 is the independent way back. Each cell copies the store (hard links kept) and damages
CURRENT's file in place, so a flipped or truncated shared file damages N2 too.

Usage: python -m bench.corruption [--quick] [--out PATH] [--json PATH]
(--quick: model.pt, model.json, index.faiss, every parquet table and manifest.json, the
CLI in this process; the full run: every file of the version, a one-bit flip of each JSON
file too, the CLI as subprocesses.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.corruption_cli import CliRunnerFn, cli_in_process, cli_subprocess
from bench.corruption_ops import OPERATIONS, Base, Cell, Outcome
from bench.damage import DAMAGES, DamageKind, copy_store

__all__ = [
    "BASE_CONFIG",
    "build_base",
    "main",
    "matrix_files",
    "render",
    "run_cell",
    "run_matrix",
]

log = logging.getLogger("bench.corruption")

# The tiny synthetic world, two epochs: ~1.5 s per nightly on 2 cores; passes the gate.
BASE_CONFIG: Final[dict[str, Any]] = {"data": {"scale": "tiny"}, "train": {"epochs": 2}}
BEGIN, END = "<!-- corruption-matrix:begin -->", "<!-- corruption-matrix:end -->"


def _item(item_id: int, category: int, content: Any) -> dict[str, Any]:
    return {"item_id": item_id, "category": category, "content": [float(v) for v in content]}


def build_base(root: Path, config: dict[str, Any] = BASE_CONFIG) -> Base:
    """Publish N1, N2 (tiny nightlies) and an items version on N2 into a new store."""
    from core import ItemsBatch, NightlyConfig, apply_items, run_nightly
    from core.compaction import compact_current
    from core.versionio import read_serving_tables
    from storage import Layout, VersionFiles, VersionStore, read_json

    cfg = NightlyConfig.model_validate(config | {"runtime": {"storage_root": str(root)}})
    n1, n2 = run_nightly(cfg), run_nightly(cfg)
    store = VersionStore(Layout(root))
    tables = read_serving_tables(store.open_current().path)
    top = int(tables.item_id.max())
    first = _item(top + 1, int(tables.category[0]), tables.content[0])
    _, delta = apply_items(str(root), ItemsBatch(event_id="base", items=[first]))
    assert delta != n2, "the items event published nothing"
    # The event's delta folded into a complete items version that hard-links N2's
    # unchanged files (tests/core/items/test_deltas.py damages deltas themselves).
    current = compact_current(Layout(root)).version_id
    version = store.open_current()
    assert version.version_id == current != delta, "the compaction published nothing"
    log.info("base store %s: N1 %s, N2 %s, I %s", root, n1, n2, current)
    return Base(
        root=root,
        nightly1=n1,
        nightly2=n2,
        current=current,
        user_id=int(tables.user_id[0]),
        new_item=_item(top + 2, int(tables.category[1]), tables.content[1]),
        nightly_config=dict(config),
        history=list(read_json(version.file(VersionFiles.METRICS_HISTORY))),
        metrics=dict(version.manifest.metrics),
    )


def matrix_files(base: Base, quick: bool, only: Sequence[str] = ()) -> list[tuple[str, DamageKind]]:
    """(file, damage) cells: the model, its config, the index, every parquet table and
    the manifest (``quick``), or every file of CURRENT plus a one-bit flip of each JSON
    file (a digit of a number stays a digit: valid JSON, another value); ``only``: just
    these files."""
    from storage import Layout, VersionFiles, VersionStore

    files = sorted(VersionStore(Layout(base.root)).open_current().manifest.files)
    head = [VersionFiles.MODEL_WEIGHTS, VersionFiles.MODEL_CONFIG, VersionFiles.INDEX]
    tables = [f for f in files if f.endswith(".parquet")]
    rest = [] if quick else [f for f in files if f not in head and f not in tables]
    names = [*head, *tables, *rest, VersionFiles.MANIFEST]
    if only:
        unknown = sorted(set(only) - set(files) - {VersionFiles.MANIFEST})
        if unknown:
            raise ValueError(f"no such file in the version: {unknown} (has {files})")
        names = [n for n in [*files, VersionFiles.MANIFEST] if n in only]
    cells: list[tuple[str, DamageKind]] = [(n, d) for n in names for d in DAMAGES]
    if not quick:
        cells += [(n, "bitflip") for n in names if n.endswith(".json")]
    return cells


def run_cell(
    base: Base, work: Path, file: str, kind: DamageKind, op: str, cli: CliRunnerFn
) -> Outcome:
    """Operation ``op`` on a fresh copy of the base store (under ``work``) whose CURRENT
    ``file`` gets damage ``kind``; the copy is removed afterwards."""
    root = work / "copy"
    copy_store(base.root, root)
    try:
        return OPERATIONS[op](Cell(base, root, file, kind), cli)
    except Exception as e:  # a crash is a finding for the table, not the end of the run
        log.exception("%s / %s / %s crashed", file, kind, op)
        return Outcome(f"crashed: {type(e).__name__}", False, (), traceback.format_exc())
    finally:
        shutil.rmtree(root)


def run_matrix(
    base: Base, cells: Sequence[tuple[str, DamageKind]], cli: CliRunnerFn, work: Path
) -> list[dict[str, Any]]:
    """Every operation on every cell, each on a fresh copy of the base store."""
    rows = []
    for i, (file, kind) in enumerate(cells, 1):
        row: dict[str, Any] = {"file": file, "damage": kind, "ops": {}}
        for op in OPERATIONS:
            out = run_cell(base, work, file, kind, op, cli)
            row["ops"][op] = {
                "summary": out.summary,
                "ok": out.ok,
                "violations": list(out.violations),
                "detail": out.detail,
                "seconds": round(out.seconds, 3),
                "damage": out.damage,
            }
        bad = [op for op, o in row["ops"].items() if not o["ok"]]
        log.info(
            "cell %d/%d %s / %s: %s",
            i,
            len(cells),
            file,
            kind,
            f"unexpected: {bad}" if bad else "ok",
        )
        rows.append(row)
    return rows


def _cell(o: dict[str, Any]) -> str:
    mark = "✓" if o["ok"] else ("✗ **UNSAFE**" if o["violations"] else "✗")
    return f"{mark} {o['summary']}".replace("|", "\\|")


def render(results: dict[str, Any]) -> str:
    """The matrix as markdown: the table, then every miss and violation, then one full
    message per operation."""
    rows, ops = results["rows"], list(OPERATIONS)
    n_ops = sum(len(r["ops"]) for r in rows)
    misses = [(r, op, o) for r in rows for op, o in r["ops"].items() if not o["ok"]]
    unsafe = [(r, op, o) for r, op, o in misses if o["violations"]]
    lines = [
        f"`{results['command']}`: {len(rows)} cells x {len(ops)} operations = {n_ops} runs in "
        f"{results['seconds']:.0f} s on {results['cores']} cores (base store built in "
        f"{results['base_seconds']:.0f} s; CLI {results['cli']}). Versions: N1, N2 nightly, "
        "I = compacted items version on N2 (CURRENT, damaged), I2 = the delta an items event "
        "publishes on I, "
        "new = what the operation published.",
        "",
        f"**Published on damaged bytes or answered from them: {len(unsafe)} of {n_ops} runs.** "
        f"Runs that did not do what was expected: {len(misses)}.",
        "",
        "✓ as expected (a refusal is exit 4 with one `error:` line on stderr, no traceback, "
        "nothing on stdout); ✗ not as expected; ✗ **UNSAFE**: a version published on damaged "
        "bytes, or an answer served from them.",
        "",
        "| file | damage | " + " | ".join(ops) + " |",
        "|---|---|" + "---|" * len(ops),
    ]
    for r in rows:
        cells = " | ".join(_cell(r["ops"][op]) for op in ops)
        lines.append(f"| `{r['file']}` | {r['damage']} | {cells} |")
    if misses:
        lines += ["", "Not as expected (the damage, then what went wrong):", ""]
        for r, op, o in misses:
            why = "; ".join(o["violations"]) or (o["detail"].strip().splitlines() or [""])[-1]
            lines.append(f"- `{r['file']}` / {r['damage']} / {op} ({o['damage']}): {why}")
    lines += ["", "One message of each operation (first cell):", ""]
    first = rows[0]
    for op in ops:
        detail = first["ops"][op]["detail"].strip()
        if detail:
            lines.append(f"- {op}: `{detail.splitlines()[0]}`")
    return "\n".join(lines) + "\n"


def _write(out: Path, text: str) -> None:
    """Write ``text`` to ``out``, or between the matrix markers when ``out`` has them."""
    old = out.read_text(encoding="utf-8") if out.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        text = f"{head}{BEGIN}\n{text}{END}{rest.split(END, 1)[1]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.corruption", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="the brief file list, CLI in-process")
    p.add_argument(
        "--cli",
        choices=("subprocess", "in-process"),
        default=None,
        help="how to run towerflow [default: in-process with --quick, else subprocess]",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the markdown here (between the matrix markers when the file has them)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="also write every outcome (full messages) here"
    )
    p.add_argument("--files", default="", help="only these files (comma-separated)")
    args = p.parse_args(argv)
    # Before torch and Faiss load: OpenMP threads that spin while they wait steal the
    # cores from the rest of a busy machine (the nightly took 5-25 s instead of 1.5 s).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cli_name = args.cli or ("in-process" if args.quick else "subprocess")
    cli = cli_in_process if cli_name == "in-process" else cli_subprocess
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="towerflow-corruption-") as tmp:
        work = Path(tmp)
        base = build_base(work / "base")
        base_s = time.perf_counter() - started
        only = [f for f in args.files.split(",") if f]
        rows = run_matrix(base, matrix_files(base, args.quick, only), cli, work)
    shown = [
        "--quick" if args.quick else "",
        f"--cli {args.cli}" if args.cli else "",
        f"--files {args.files}" if args.files else "",
    ]
    results = {
        "command": " ".join(["python -m bench.corruption", *filter(None, shown)]),
        "cli": cli_name,
        "cores": os.cpu_count(),
        "base_seconds": base_s,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    text = render(results)
    if args.out is not None:
        _write(args.out, text)
        log.info("wrote %s", args.out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(text)
    unsafe = any(o["violations"] for r in rows for o in r["ops"].values())
    return 1 if unsafe else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    for name in ("core", "storage", "service", "model", "httpx", "cli", "tasks"):
        logging.getLogger(name).setLevel(logging.ERROR)
    raise SystemExit(main())
