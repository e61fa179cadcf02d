"""`towerflow versions`, `verify` and `rollback` on a store with damaged bytes: every
file's state is reported, rollback names the intact kept versions, nothing is a
traceback."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.app import app
from storage import VersionFiles
from tests.core.items.conftest import item, publish_mini_version
from tests.core.items.helpers import create

runner = CliRunner()


def _store(tmp_path: Path) -> tuple[Path, str, str, str]:
    """Two nightly versions, then an items event (a delta) on the second:
    (root, n1, n2, delta)."""
    root = tmp_path / "s"
    store = publish_mini_version(root, seed=1)
    first = store.current()
    publish_mini_version(root, seed=2)
    second = store.current()
    create(store.layout, "e1", [item(7001)])
    current = store.current()
    assert first and second and current
    return root, first, second, current


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-50] ^= 0x10
    path.write_bytes(bytes(data))


def test_versions_show_kind_parent_and_item_count(tmp_path: Path) -> None:
    root, first, second, current = _store(tmp_path)
    out = runner.invoke(app, ["versions", "--root", str(root), "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["version_id"]: r for r in json.loads(out.stdout)}
    assert rows[current]["kind"] == "delta" and rows[current]["parent"] == second
    assert rows[current]["item_count"] == rows[second]["item_count"] + 1
    assert rows[first]["kind"] == rows[second]["kind"] == "nightly"
    text = runner.invoke(app, ["versions", "--root", str(root)]).stdout
    assert "kind" in text and "delta" in text and "nightly" in text


def test_verify_reports_each_file_and_fails_on_damage(tmp_path: Path) -> None:
    root, first, second, current = _store(tmp_path)
    ok = runner.invoke(app, ["verify", "--root", str(root)])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.count("intact") == 3

    _flip(root / "versions" / second / VersionFiles.MODEL_WEIGHTS)
    bad = runner.invoke(app, ["verify", "--root", str(root), "--json"])
    assert bad.exit_code == 4
    report = {r["version_id"]: r for r in json.loads(bad.stdout)}
    # The delta's own files are intact, but it is served on its damaged base.
    assert report[current]["intact"] and not report[current]["chain_intact"]
    assert report[current]["chain"] == [second] and not report[second]["intact"]
    assert report[first]["intact"] and report[first]["chain_intact"]
    states = {f["name"]: f["status"] for f in report[second]["files"]}
    assert states[VersionFiles.MODEL_WEIGHTS] == "wrong checksum"
    assert {s for n, s in states.items() if n != VersionFiles.MODEL_WEIGHTS} == {"ok"}
    text = runner.invoke(app, ["verify", current, "--root", str(root)])
    assert text.exit_code == 4 and f"needs damaged {second}" in text.stdout

    (root / "versions" / first / VersionFiles.INDEX).unlink()
    one = runner.invoke(app, ["verify", first, "--root", str(root)])
    assert one.exit_code == 4 and "missing" in one.stdout and "Traceback" not in one.output


def test_rollback_to_a_damaged_version_names_the_intact_ones(tmp_path: Path) -> None:
    root, first, second, _ = _store(tmp_path)
    _flip(root / "versions" / second / VersionFiles.MODEL_WEIGHTS)
    out = runner.invoke(app, ["rollback", second, "--root", str(root)])
    assert out.exit_code == 4
    assert "Traceback" not in out.output
    assert f"intact kept versions: {first} (nightly)" in out.output
    ok = runner.invoke(app, ["rollback", first, "--root", str(root)])
    assert ok.exit_code == 0 and f"-> {first}" in ok.stdout
