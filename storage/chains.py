"""Chains of versions: a delta version (kind "delta") is read on top of its parent, down
to the complete version at the bottom of its chain (its *base*). Storage knows chains
only through manifests (``lineage.parent_version`` and ``extra["delta"]``), so that
whatever opens, verifies or rolls back a version can take its whole chain: the bytes a
delta needs are its own and those of every version under it. What a delta holds and how
it is applied is the core's business (``core.deltas``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from storage.errors import CorruptVersionError
from storage.manifest import Manifest
from storage.version_views import PublishedVersion

__all__ = ["Chain", "delta_info", "depth_of", "is_delta", "resolve_chain", "verify_chain"]


class VersionStore(Protocol):
    """What chains need of ``storage.versions.VersionStore`` (which imports this module)."""

    def open_version(self, version_id: str, verify: bool = True) -> PublishedVersion: ...

    def verify(self, version_id: str, files: Sequence[str] | None = None) -> Manifest: ...


# A chain deeper than this is damage (a parent loop), not a long chain: compaction keeps
# chains to tens of deltas.
_MAX_WALK: Final = 100_000


def delta_info(version: PublishedVersion) -> dict[str, Any] | None:
    """A delta's ``extra["delta"]`` (``base``, ``depth``, counts), None for a complete
    version."""
    info = version.manifest.extra.get("delta")
    return dict(info) if isinstance(info, dict) else None


def depth_of(version: PublishedVersion) -> int:
    """How many deltas ``version`` stacks on its complete base (0 for a complete one)."""
    return int((delta_info(version) or {}).get("depth", 0))


def is_delta(version: PublishedVersion) -> bool:
    return delta_info(version) is not None


@dataclass(frozen=True)
class Chain:
    """How to read a version: its complete ``base`` and the ``deltas`` above it, oldest
    first (empty for a complete version). ``head`` is the version itself."""

    base: PublishedVersion
    deltas: tuple[PublishedVersion, ...]

    @property
    def head(self) -> PublishedVersion:
        return self.deltas[-1] if self.deltas else self.base

    @property
    def versions(self) -> tuple[PublishedVersion, ...]:
        return (self.base, *self.deltas)

    def base_file(self, name: str) -> Path:
        """A file only complete versions hold (model, users, metrics, report files)."""
        return self.base.file(name)


def resolve_chain(store: VersionStore, version: PublishedVersion) -> Chain:
    """``version``'s chain, each member opened without verifying (callers verify what they
    read: ``verify_chain``). Raises CorruptVersionError when a parent is missing or the
    chain does not end on the base its head names."""
    deltas: list[PublishedVersion] = []
    node = version
    while (info := delta_info(node)) is not None:
        deltas.append(node)
        parent = node.manifest.lineage.parent_version
        if parent is None or len(deltas) > _MAX_WALK:
            raise CorruptVersionError(
                node.version_id, "manifest.json", "a delta without a parent to stack on"
            )
        try:
            node = store.open_version(parent, verify=False)
        except (CorruptVersionError, FileNotFoundError, LookupError) as e:
            raise CorruptVersionError(
                version.version_id, "manifest.json", f"its chain is broken at {parent}: {e}"
            ) from e
        if not is_delta(node) and info.get("base") != node.version_id:
            raise CorruptVersionError(
                version.version_id,
                "manifest.json",
                f"its chain ends on {node.version_id}, not on its base {info.get('base')}",
            )
    return Chain(node, tuple(reversed(deltas)))


def verify_chain(
    store: VersionStore, chain: Chain, base_files: Sequence[str] | None = None
) -> Chain:
    """Check every delta of ``chain`` and the base's ``base_files`` (None: all of them)
    against their manifests; the chain with the verified manifests."""
    base = PublishedVersion(
        chain.base.version_id,
        chain.base.path,
        store.verify(chain.base.version_id, base_files),
    )
    deltas = tuple(
        PublishedVersion(d.version_id, d.path, store.verify(d.version_id)) for d in chain.deltas
    )
    return Chain(base, deltas)
