"""Damaging a store on purpose, for the corruption matrix (``bench.corruption``): copy a
store with its hard links, damage one file of a version in place (flip a byte, truncate,
delete), and check afterwards that nothing was published on the damaged bytes.

Damage is done in place, as a failing disk or a stray process would: a flipped or
truncated file keeps its inode, so every version that hard-links it (an items version and
its nightly parent) is damaged with it; a deleted name leaves other links intact.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from storage import Layout, VersionStore

__all__ = [
    "DAMAGES",
    "Damage",
    "DamageKind",
    "Inode",
    "copy_store",
    "damage_file",
    "damaged_versions",
    "holders",
    "new_versions",
    "published_problems",
]

# flip: the middle byte XOR 0xFF (every bit of one byte); bitflip: the middle byte XOR
# 0x01 (one bit: in a JSON digit it leaves valid JSON, another number); truncate: to
# half its size; delete: the name removed.
DamageKind = Literal["flip", "truncate", "delete", "bitflip"]
DAMAGES: Final[tuple[DamageKind, ...]] = ("flip", "truncate", "delete")

Inode = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True)
class Damage:
    """What was done to one file: its inode (None after a delete) and the links it had."""

    version_id: str
    file: str
    kind: DamageKind
    inode: Inode | None
    links: int
    detail: str


def copy_store(src: Path, dst: Path) -> None:
    """Copy the store at ``src`` to a new folder ``dst``, keeping hard links between its
    files as hard links (``shutil.copytree`` would turn them into separate copies, so
    damage to a shared file would no longer reach the versions that share it)."""
    seen: dict[Inode, Path] = {}
    for folder, dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            s, d = Path(folder) / name, dst / rel / name
            st = s.lstat()
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                os.link(seen[key], d)
                continue
            shutil.copy2(s, d, follow_symlinks=False)
            seen[key] = d
        dirs.sort()


def damage_file(root: Path, version_id: str, name: str, kind: DamageKind) -> Damage:
    """Damage ``versions/<version_id>/<name>`` of the store at ``root`` in place."""
    path = Layout(root).version_dir(version_id) / name
    st = path.stat()
    inode: Inode | None = (st.st_dev, st.st_ino)
    size = st.st_size
    if kind == "delete":
        path.unlink()
        inode, detail = None, f"deleted ({size} bytes, {st.st_nlink} links)"
    elif kind == "truncate":
        os.truncate(path, size // 2)
        detail = f"truncated {size} -> {size // 2} bytes"
    else:
        pos, mask = size // 2, 0xFF if kind == "flip" else 0x01
        with path.open("r+b") as f:
            f.seek(pos)
            old = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([old ^ mask]))
        detail = f"byte {pos} of {size}: {old:#04x} -> {old ^ mask:#04x}"
    return Damage(version_id, name, kind, inode, st.st_nlink, detail)


def damaged_versions(store: VersionStore) -> list[str]:
    """Registered versions that fail ``VersionStore.check``, newest first."""
    return [v.version_id for v in store.list_versions() if not store.check(v.version_id).intact]


def holders(store: VersionStore, damage: Damage) -> set[str]:
    """The versions the damage reached: the one damaged, and every registered version
    holding the damaged inode (a hard link to the same bytes)."""
    out = {damage.version_id}
    if damage.inode is not None:
        for v in store.list_versions():
            folder = store.layout.version_dir(v.version_id)
            if folder.is_dir() and damage.inode in _inodes(folder).values():
                out.add(v.version_id)
    return out


def new_versions(store: VersionStore, before: Iterable[str]) -> list[str]:
    """Registered versions not in ``before`` (published since it was taken)."""
    known = set(before)
    return [v.version_id for v in store.list_versions() if v.version_id not in known]


def _inodes(folder: Path) -> dict[str, Inode]:
    return {p.name: (p.stat().st_dev, p.stat().st_ino) for p in folder.iterdir()}


def published_problems(store: VersionStore, versions: Iterable[str], damage: Damage) -> list[str]:
    """Why any of ``versions`` (published during a cell) stands on damaged bytes: a file
    that fails ``VersionStore.check``, or one that is the damaged inode; [] when none."""
    problems = []
    for vid in versions:
        check = store.check(vid)
        problems += [f"{vid}: {f.name} {f.status}" for f in check.problems]
        if damage.inode is None:
            continue
        for name, inode in _inodes(store.layout.version_dir(vid)).items():
            if inode == damage.inode:
                problems.append(f"{vid}: {name} is the damaged inode")
    return problems
