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

__all__ = [
    "COMPACTED",
    "REBASED",
    "VERSION_ONLY",
    "Chain",
    "delta_info",
    "depth_of",
    "is_delta",
    "resolve_chain",
    "same_items_as",
    "verify_chain",
]


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


# ``extra[COMPACTED]`` of a compaction: ``of`` (the chain head it folded, whose items it
# serves exactly: what arrived since goes on top as deltas), ``base`` and ``folded``.
COMPACTED: Final = "compacted"
# ``extra[REBASED]`` of a delta published again on a compaction: ``of``, the delta it
# repeats (``core.rebase``).
REBASED: Final = "rebased"
# Keys of ``extra`` that describe one version alone: a version built on it never copies them.
VERSION_ONLY: Final = frozenset({COMPACTED, REBASED})


def same_items_as(version: PublishedVersion) -> str | None:
    """The version that ``version`` serves exactly the same items as, with the same
    vectors, in another chain: the chain head a compaction folded, or the delta a
    rebased delta repeats. A server of that version takes ``version`` over without a
    reload. None for any other."""
    extra = version.manifest.extra
    compacted, rebased = extra.get(COMPACTED), extra.get(REBASED)
    if isinstance(compacted, dict):
        of = compacted.get("of")
        # A compaction's parent is the head it folded.
        return of if isinstance(of, str) and of == version.manifest.lineage.parent_version else None
    if isinstance(rebased, dict) and isinstance(rebased.get("of"), str):
        return str(rebased["of"])
    return None


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
