"""Verified lineage, rollback that protects and retention by kind (#14 defects 1-3, 8):
an items publish never derives a version from bytes that fail their checksums, carried
files keep their first checksums, nightly versions share no inode, item events never
prune nightly versions, and a dead publisher's leftovers go at the next publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import core.delta_publish as delta_publish
from core.catalogue_sync import sync_current
from core.compaction import compact_current
from core.delta_publish import BASE_READS
from core.deltas import resolve_chain
from core.items_validation import validate_upserts
from core.recall import Recaller
from storage import CatalogueLog, CorruptVersionError, Layout, VersionFiles, VersionStore
from storage.owners import owner_path, write_owner
from tests.core.items.conftest import CONTENT_DIM, item, publish_mini_version
from tests.core.items.helpers import create

DAMAGED_FILES = (
    VersionFiles.USERS,
    VersionFiles.INDEX,
    VersionFiles.MODEL_WEIGHTS,
    VersionFiles.ITEMS,
)


def _flip(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))  # in place: every hard link sees it, as on bit rot


def _versions(store: VersionStore) -> list[str]:
    return [v.version_id for v in store.list_versions()]


@pytest.mark.parametrize("name", DAMAGED_FILES)
def test_items_publish_never_derives_from_a_corrupt_chain(tmp_path: Path, name: str) -> None:
    """Defect 1: a flipped byte in CURRENT was re-hashed into a new, valid-looking version.
    A delta derives from its base's model and item IDs: damage there refuses the publish;
    damage elsewhere is not read and not carried (a delta holds only its own files),
    and no reader serves the chain or compacts it."""
    store = publish_mini_version(tmp_path / "s")
    layout = store.layout
    create(layout, "e1", [item(7001)])  # a delta on top of the nightly
    current = store.current()
    assert current is not None
    base = resolve_chain(store, store.open_current()).base
    _flip(base.path / name)
    delta_publish._known.clear()  # a new process: nothing verified in memory yet
    before = _versions(store)

    if name in BASE_READS:
        with pytest.raises(CorruptVersionError, match=name):
            create(layout, "e2", [item(7002)])
        assert store.current() == current and _versions(store) == before
        assert not [p for p in layout.staging_versions_dir.iterdir()]  # nothing half-staged
        # The event is still acknowledged: the catalogue holds it for the next good publish.
        assert CatalogueLog(layout.catalogue_db).head() >= 2
    else:
        assert create(layout, "e2", [item(7002)]).published
        assert name not in store.open_current().manifest.files
    with pytest.raises(CorruptVersionError, match=name):
        Recaller.load(store)
    with pytest.raises(CorruptVersionError, match=name):
        compact_current(layout)
    with pytest.raises(CorruptVersionError, match=name):
        store.rollback(current)  # a delta is only as intact as its chain


def test_compaction_carries_files_with_their_first_checksums(tmp_path: Path) -> None:
    """Unchanged files of a compacted version are not re-hashed: their manifest entries
    are the base's, byte for byte, while rewritten files get fresh ones."""
    store = publish_mini_version(tmp_path / "s")
    parent = store.open_current()
    create(store.layout, "e1", [item(7001)])
    assert compact_current(store.layout).compacted
    child = store.open_current()
    assert child.version_id != parent.version_id
    for name in (VersionFiles.MODEL_WEIGHTS, VersionFiles.MODEL_CONFIG, VersionFiles.USERS):
        assert child.manifest.files[name] == parent.manifest.files[name]
    assert child.manifest.files[VersionFiles.INDEX] != parent.manifest.files[VersionFiles.INDEX]


def test_bytes_damaged_after_staging_fail_the_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage that lands between the chain check and the publish (a copy across
    devices, say) is caught by reading the carried file back against its first checksum."""
    import core.compaction as compaction

    store = publish_mini_version(tmp_path / "s")
    create(store.layout, "e1", [item(7001)])
    current = store.current()
    real_stage = compaction.stage_child

    def stage_then_damage(s: VersionStore, parent):  # type: ignore[no-untyped-def]
        version_id, staging, identities = real_stage(s, parent)
        weights = staging / VersionFiles.MODEL_WEIGHTS
        data = bytearray(weights.read_bytes())
        data[-100] ^= 1
        os.unlink(weights)  # a new file: the parent's bytes stay good
        weights.write_bytes(bytes(data))
        identities = dict(identities)
        st = weights.stat()
        identities[VersionFiles.MODEL_WEIGHTS] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        return version_id, staging, identities

    monkeypatch.setattr(compaction, "stage_child", stage_then_damage)
    with pytest.raises(CorruptVersionError, match=VersionFiles.MODEL_WEIGHTS):
        compact_current(store.layout)
    assert store.current() == current
    assert not [p for p in store.layout.staging_versions_dir.iterdir()]


def test_nightly_versions_share_no_inode_and_stay_restorable(tmp_path: Path) -> None:
    """Defect 2: one flipped byte in CURRENT's weights (a compacted version hard-links its
    nightly's) must leave an older nightly intact and restorable, and say which are."""
    root = tmp_path / "s"
    store = publish_mini_version(root, seed=1)
    first = store.current()
    publish_mini_version(root, seed=2)
    second = store.current()
    for n in range(4):
        create(store.layout, f"e{n}", [item(7000 + n)])
    compact_current(store.layout)
    current = store.current()
    assert first and second and current and current not in (first, second)

    inodes = {
        v: {(p.stat().st_dev, p.stat().st_ino) for p in store.layout.version_dir(v).iterdir()}
        for v in (first, second)
    }
    assert not inodes[first] & inodes[second]

    _flip(store.layout.version_dir(current) / VersionFiles.MODEL_WEIGHTS)
    check = store.check(current)
    assert not check.intact
    [bad] = check.problems
    assert bad.name == VersionFiles.MODEL_WEIGHTS and bad.status == "wrong checksum"
    assert bad.links is not None and bad.links > 1  # shared with its lineage
    # Every version on the damaged lineage is hit; the other nightly is not.
    assert not store.check(second).intact
    assert store.check(first).intact
    with pytest.raises(CorruptVersionError):
        store.rollback(second)
    store.rollback(first)
    assert store.open_current().version_id == first


def test_item_events_never_prune_nightly_versions(tmp_path: Path) -> None:
    """Defect 3: retention kept the newest 5 versions of any kind, so four item events
    pushed the first nightly out."""
    root = tmp_path / "s"
    store = publish_mini_version(root, seed=1)
    first = store.current()
    publish_mini_version(root, seed=2)
    second = store.current()
    assert first and second
    layout = Layout(root)
    for n in range(8):
        valid = validate_upserts([item(7000 + n)], CONTENT_DIM, 10)
        CatalogueLog(layout.catalogue_db).append_upserts(f"e{n}", valid.upserts)
        sync_current(layout, keep_versions=2, keep_item_versions=3)
    infos = VersionStore(layout).list_versions()
    kinds = [(v.version_id, v.kind) for v in infos]
    # Every delta of CURRENT's chain stays (CURRENT is read on it), and both nightlies.
    assert [k for _, k in kinds] == ["delta"] * 8 + ["nightly"] * 2, kinds
    assert {first, second} <= {v for v, _ in kinds}
    # The kept item versions are the newest ones on CURRENT's lineage.
    assert infos[0].is_current
    assert infos[0].parent == infos[1].version_id and infos[1].parent == infos[2].version_id
    VersionStore(layout).rollback(first)  # still restorable


def test_dead_publishers_staging_goes_at_the_next_publish(tmp_path: Path) -> None:
    """Defect 8: staging left by killed runs stayed until a nightly 6 hours later; the
    next locked run removes it at once, and keeps a live process's staging."""
    store = publish_mini_version(tmp_path / "s")
    layout = store.layout
    dead = subprocess.run(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    )
    assert dead.returncode == -signal.SIGKILL
    # A folder staged by a process that is gone (its marker names that pid).
    ghost = layout.staging_version_dir("v20000101T000000000Z-dead00")
    ghost.parent.mkdir(parents=True, exist_ok=True)
    write_owner(ghost, "items")
    marker = owner_path(ghost)
    text = marker.read_text().replace(f'"pid": {os.getpid()}', '"pid": 999999')
    marker.write_text(text)
    ghost.mkdir()
    (ghost / VersionFiles.INDEX).write_bytes(b"half")
    live = store.begin(kind="nightly")  # this process is alive: kept

    result = create(layout, "e1", [item(7001)])

    assert ghost in result.removed and not ghost.exists() and not marker.exists()
    assert live.is_dir() and owner_path(live).is_file()
