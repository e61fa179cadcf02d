"""The corruption matrix (``bench.corruption``): the damage helpers, one representative
cell of each operation on a tiny base store (fast), and the whole ``--quick`` matrix
(slow: ~3 min on 2 cores, longer on a busy machine)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.corruption import build_base, main, run_cell
from bench.corruption_cli import cli_in_process, cli_subprocess
from bench.corruption_ops import OPERATIONS, Base
from bench.damage import copy_store, damage_file, published_problems
from storage import Layout, VersionFiles, VersionStore


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """Two tiny nightlies and an items version on the second (~5 s)."""
    return build_base(tmp_path_factory.mktemp("corruption") / "base")


def test_copy_keeps_hard_links_and_damage_in_place_reaches_every_link(
    base: Base, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    copy_store(base.root, root)
    layout = Layout(root)
    mine = layout.version_dir(base.current) / VersionFiles.MODEL_WEIGHTS
    parent = layout.version_dir(base.nightly2) / VersionFiles.MODEL_WEIGHTS
    assert os.path.samefile(mine, parent)  # the items version shares N2's weights
    damage = damage_file(root, base.current, VersionFiles.MODEL_WEIGHTS, "flip")
    store = VersionStore(layout)
    assert damage.links == 2 and damage.inode == (mine.stat().st_dev, mine.stat().st_ino)
    assert not store.check(base.nightly2).intact and store.check(base.nightly1).intact
    problems = published_problems(store, [base.nightly2], damage)
    assert any("damaged inode" in p for p in problems) and any(
        "wrong checksum" in p for p in problems
    )
    assert published_problems(store, [base.nightly1], damage) == []


# One cell per operation; each covers a different file and kind of damage.
CELLS = [
    ("recommend", VersionFiles.MODEL_WEIGHTS, "flip", "exit 4 (model.pt: wrong sha256)"),
    # users.parquet is shared with N2, so the way back to N2 is damaged too.
    ("rollback", VersionFiles.USERS, "truncate", "→N2 exit 4 (users.parquet: wrong size)"),
    ("items publish", VersionFiles.INDEX, "delete", "refused (index.faiss: missing)"),
    ("nightly", VersionFiles.MANIFEST, "flip", "new version, intact"),
    ("api (start)", VersionFiles.ITEMS, "flip", "503, health 503"),
    ("api (hot swap)", VersionFiles.MODEL_CONFIG, "truncate", "applied I2 in place: 200"),
]


def test_cells_cover_every_operation() -> None:
    assert sorted(op for op, *_ in CELLS) == sorted(OPERATIONS)


@pytest.mark.parametrize(("op", "file", "kind", "expected"), CELLS, ids=[c[0] for c in CELLS])
def test_representative_cell(
    base: Base, tmp_path: Path, op: str, file: str, kind: str, expected: str
) -> None:
    out = run_cell(base, tmp_path, file, kind, op, cli_in_process)  # type: ignore[arg-type]
    assert out.violations == ()
    assert out.ok, out
    assert expected in out.summary, out.summary
    assert not (tmp_path / "copy").exists()


def test_recommend_as_a_real_process_fails_with_one_error_line(base: Base, tmp_path: Path) -> None:
    out = run_cell(base, tmp_path, VersionFiles.HISTORY, "delete", "recommend", cli_subprocess)
    assert out.ok and out.summary == "exit 4 (history.parquet: missing)", out
    assert out.detail.startswith("error: version 'I' file 'history.parquet': missing")
    assert "Traceback" not in out.detail and len(out.detail.splitlines()) == 1


@pytest.mark.slow
def test_quick_matrix_finds_nothing_unsafe_and_everything_as_expected(tmp_path: Path) -> None:
    out, results = tmp_path / "matrix.md", tmp_path / "matrix.json"
    out.write_text(
        "# head\n<!-- corruption-matrix:begin -->\nold\n<!-- corruption-matrix:end -->\ntail\n"
    )
    assert main(["--quick", "--out", str(out), "--json", str(results)]) == 0
    rows = json.loads(results.read_text())["rows"]
    assert len(rows) == 8 * 3  # model, config, index, 4 parquet tables, manifest
    misses = [
        (r["file"], r["damage"], op) for r in rows for op, o in r["ops"].items() if not o["ok"]
    ]
    assert misses == []
    text = out.read_text()
    assert text.startswith("# head\n") and text.endswith("tail\n") and "old" not in text
    assert "Published on damaged bytes or answered from them: 0 of 144 runs" in text
