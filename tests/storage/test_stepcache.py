"""Kept step results (storage.stepcache): exact round trip, nothing trusted unchecked,
nothing half-written visible."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from storage import Layout
from storage.stepcache import (
    ENTRY_FILE,
    cache_dir,
    clear_steps,
    restore_step,
    save_step,
    stage_listing,
    step_outputs,
)


def _stage(tmp_path: Path) -> Path:
    folder = tmp_path / "stage"
    folder.mkdir()
    (folder / "model.pt").write_bytes(bytes(range(256)) * 40)
    (folder / "training.json").write_text('{"epochs": 3}')
    return folder


def test_round_trip_restores_the_same_bytes_and_meta(tmp_path: Path) -> None:
    layout, stage = Layout(tmp_path / "root"), _stage(tmp_path)
    save_step(layout, "train-model", "k1", stage, ["model.pt", "training.json"], {"loss": [1.5]})
    dest = tmp_path / "next"
    dest.mkdir()
    entry = restore_step(layout, "train-model", "k1", dest)
    assert entry is not None and entry.meta == {"loss": [1.5]}
    for name in ("model.pt", "training.json"):
        assert (dest / name).read_bytes() == (stage / name).read_bytes()
        # Copies, never links: a version must not share an inode with the cache.
        assert (dest / name).stat().st_ino != (stage / name).stat().st_ino
    assert sorted(p.name for p in dest.iterdir()) == ["model.pt", "training.json"]


def test_another_key_or_step_is_a_miss(tmp_path: Path) -> None:
    layout, stage = Layout(tmp_path / "root"), _stage(tmp_path)
    save_step(layout, "train-model", "k1", stage, ["model.pt"], {})
    assert restore_step(layout, "train-model", "k2", stage) is None
    assert restore_step(layout, "evaluate", "k1", stage) is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "entry-garbage", "entry-gone"])
def test_a_damaged_entry_is_dropped_and_nothing_is_copied(tmp_path: Path, damage: str) -> None:
    layout, stage = Layout(tmp_path / "root"), _stage(tmp_path)
    folder = save_step(layout, "train-model", "k1", stage, ["model.pt", "training.json"], {})
    model = folder / "model.pt"
    if damage == "flip":
        data = bytearray(model.read_bytes())
        data[5000] ^= 0x01
        model.write_bytes(bytes(data))
    elif damage == "truncate":
        model.write_bytes(model.read_bytes()[:-1])
    elif damage == "delete":
        model.unlink()
    elif damage == "entry-garbage":
        (folder / ENTRY_FILE).write_text("{not json")
    else:
        (folder / ENTRY_FILE).unlink()
    dest = tmp_path / "next"
    dest.mkdir()
    assert restore_step(layout, "train-model", "k1", dest) is None
    assert list(dest.iterdir()) == []
    if damage != "entry-gone":  # a folder without its entry is not an entry at all
        assert not folder.exists()


def test_an_entry_of_another_key_renamed_into_place_is_not_trusted(tmp_path: Path) -> None:
    layout, stage = Layout(tmp_path / "root"), _stage(tmp_path)
    other = save_step(layout, "train-model", "k1", stage, ["model.pt"], {})
    shutil.copytree(other, other.with_name("k2"))
    assert restore_step(layout, "train-model", "k2", tmp_path) is None


def test_a_failed_save_leaves_no_entry_and_no_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, stage = Layout(tmp_path / "root"), _stage(tmp_path)
    calls = []

    def full_disk(src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr("storage.stepcache.shutil.copyfile", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_step(layout, "train-model", "k1", stage, ["model.pt", "training.json"], {})
    assert list((cache_dir(layout) / "train-model").iterdir()) == []
    assert restore_step(layout, "train-model", "k1", stage) is None


def test_saving_again_replaces_the_entry(tmp_path: Path) -> None:
    layout, stage = Layout(tmp_path / "root"), _stage(tmp_path)
    save_step(layout, "evaluate", "k", stage, ["training.json"], {"n": 1})
    (stage / "training.json").write_text('{"epochs": 4}')
    folder = save_step(layout, "evaluate", "k", stage, ["training.json"], {"n": 2})
    assert json.loads((folder / ENTRY_FILE).read_text())["meta"] == {"n": 2}
    dest = tmp_path / "d"
    dest.mkdir()
    restore_step(layout, "evaluate", "k", dest)
    assert (dest / "training.json").read_text() == '{"epochs": 4}'


@pytest.mark.parametrize("bad", ["../up", "a/b", "", "x\n"])
def test_hostile_step_keys_and_names_are_refused(tmp_path: Path, bad: str) -> None:
    layout, stage = Layout(tmp_path / "root"), _stage(tmp_path)
    with pytest.raises(ValueError):
        save_step(layout, "train-model", bad, stage, ["model.pt"], {})
    with pytest.raises(ValueError):
        save_step(layout, bad, "k", stage, ["model.pt"], {})
    with pytest.raises(ValueError):
        restore_step(layout, "train-model", bad, stage)


def test_clear_removes_every_entry_and_counts_them(tmp_path: Path) -> None:
    layout, stage = Layout(tmp_path / "root"), _stage(tmp_path)
    save_step(layout, "train-model", "a", stage, ["model.pt"], {})
    save_step(layout, "evaluate", "b", stage, ["training.json"], {})
    (cache_dir(layout) / "evaluate" / ".tmp-b-dead").mkdir()  # a killed save's leftovers
    assert clear_steps(layout) == 2
    assert not cache_dir(layout).exists()
    assert clear_steps(layout) == 0


def test_step_outputs_are_the_files_created_or_replaced(tmp_path: Path) -> None:
    stage = _stage(tmp_path)
    before = stage_listing(stage)
    (stage / "new.parquet").write_bytes(b"x")
    replacement = stage / ".tmp"
    replacement.write_text('{"epochs": 9}')
    replacement.replace(stage / "training.json")
    (stage / ".hidden").write_text("owner")
    assert step_outputs(before, stage_listing(stage)) == ["new.parquet", "training.json"]
