"""Peak memory of ``towerflow import`` on a large log: writes a synthetic interaction log
(CSV: user_id, item_id, rating, timestamp) into a temporary folder, imports it in a child
process and reports rows, file size, wall time and the child's peak RSS (``wait4``).

    python -m bench.import_rss --rows 10000000 [--ids int,str] [--keep DIR]

"str" IDs ("u123", "i45") take the dense ID map; "int" ones the identity map. Every run
imports into a fresh store, so nothing is reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

__all__ = ["ImportRun", "main", "measure_import", "write_log"]

log = logging.getLogger("bench.import_rss")

_CHUNK_ROWS: Final = 1_000_000
_T0: Final = 1_500_000_000  # 2017-07-14, unix seconds


@dataclass(frozen=True)
class ImportRun:
    """One measured import."""

    rows: int
    ids: Literal["int", "str"]
    file_mib: float
    wall_s: float
    peak_rss_mib: float
    interactions: int


def write_log(
    path: Path, rows: int, ids: Literal["int", "str"], seed: int = 0, n_users: int = 0
) -> None:
    """A CSV log of ``rows`` ratings by ~rows/50 users of ~rows/200 items (Zipf-like
    popularity), times over three years; written in chunks (bounded memory)."""
    rng = np.random.default_rng(seed)
    n_users = n_users or max(rows // 50, 10)
    n_items = max(rows // 200, 10)
    options = pcsv.WriteOptions(include_header=True)
    with pcsv.CSVWriter(path, _schema(ids), write_options=options) as writer:
        for start in range(0, rows, _CHUNK_ROWS):
            n = min(_CHUNK_ROWS, rows - start)
            user = rng.integers(1, n_users + 1, n)
            item = np.minimum(rng.zipf(1.3, n), n_items)
            cols: dict[str, Any] = {
                "user_id": pa.array(user),
                "item_id": pa.array(item),
                "rating": pa.array(rng.integers(1, 6, n)),
                "timestamp": pa.array(_T0 + rng.integers(0, 3 * 365 * 86400, n)),
            }
            if ids == "str":
                for col, prefix in (("user_id", "u"), ("item_id", "i")):
                    cols[col] = pc.binary_join_element_wise(
                        prefix, pc.cast(cols[col], pa.string()), ""
                    )
            writer.write_table(pa.table(cols, schema=_schema(ids)))


def _schema(ids: Literal["int", "str"]) -> pa.Schema:
    id_type = pa.string() if ids == "str" else pa.int64()
    return pa.schema(
        [
            ("user_id", id_type),
            ("item_id", id_type),
            ("rating", pa.int64()),
            ("timestamp", pa.int64()),
        ]
    )


def measure_import(
    log_path: Path, root: Path, *, min_rating: float | None = None
) -> tuple[float, float, dict[str, Any]]:
    """(wall s, peak RSS MiB, report) of importing ``log_path`` in a child process; every
    row is kept unless ``min_rating`` filters (all kept: the most memory)."""
    source: dict[str, Any] = {"path": str(log_path), "time_col": "timestamp"}
    if min_rating is not None:
        source |= {"rating_col": "rating", "min_rating": min_rating}
    cfg = {"name": "rss", "interactions": source, "mode": "lenient"}
    code = (
        "import json, sys\n"
        "from core.importing import import_log\n"
        "r = import_log(sys.argv[1], json.loads(sys.argv[2]))\n"
        "print(json.dumps(r.report.model_dump(mode='json')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out_path = root.parent / f"{root.name}.stdout"
    with out_path.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(root), json.dumps(cfg)], stdout=out, env=env
        )
        try:
            # wait4, not Popen.wait: it returns this child's own resource usage.
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"import of {log_path} exited with {proc.returncode}")
    report = json.loads(out_path.read_text().strip().splitlines()[-1])
    return wall, usage.ru_maxrss / 1024, report


def _baseline_rss() -> float:
    """Peak RSS (MiB) of a child that only imports the importer (torch included)."""
    proc = subprocess.Popen([sys.executable, "-c", "import core.importing"])
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss / 1024


def _table(runs: Sequence[ImportRun], baseline: float) -> str:
    head = "| rows | ids | file MiB | wall s | rows/s | peak RSS MiB | interactions kept |"
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(
            f"| {r.rows:,} | {r.ids} | {r.file_mib:,.0f} | {r.wall_s:.1f} | "
            f"{r.rows / r.wall_s:,.0f} | {r.peak_rss_mib:,.0f} | {r.interactions:,} |"
        )
    lines.append(f"\nbaseline (python + `import core.importing`): {baseline:,.0f} MiB peak RSS")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.import_rss", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--ids", default="int,str", help="Comma-separated: int, str.")
    p.add_argument("--keep", type=Path, help="Work in this folder and keep it.")
    p.add_argument("--min-rating", type=float, help="Keep only ratings >= this [all kept].")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.keep or Path(tempfile.mkdtemp(prefix="import-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for ids in args.ids.split(","):
            path = work / f"log-{ids}-{args.rows}.csv"
            start = time.perf_counter()
            write_log(path, args.rows, ids)  # type: ignore[arg-type]
            log.info("wrote %s (%.0f MiB) in %.1f s", path, path.stat().st_size / 2**20,
                     time.perf_counter() - start)  # fmt: skip
            root = work / f"store-{ids}"
            shutil.rmtree(root, ignore_errors=True)
            wall, rss, report = measure_import(path, root, min_rating=args.min_rating)
            runs.append(
                ImportRun(
                    rows=args.rows,
                    ids=ids,  # type: ignore[arg-type]
                    file_mib=path.stat().st_size / 2**20,
                    wall_s=wall,
                    peak_rss_mib=rss,
                    interactions=report["n_interactions"],
                )
            )
            log.info("imported in %.1f s, peak RSS %.0f MiB", wall, rss)
            path.unlink()
        sys.stdout.write(_table(runs, _baseline_rss()) + "\n")  # the result
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
