"""A compaction killed (SIGKILL-like: ``os._exit`` in a forked child, no cleanup) at every
step of registering its fold and rebasing the deltas published meanwhile
(``core.rebase``): CURRENT always names a version that loads and verifies, every
acknowledged item is served exactly once, and the next compaction and event succeed and
leave no registered leftovers off CURRENT's lineage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import core.compaction as compaction
from core.compaction import compact_current
from core.recall import Recaller
from storage import VersionStore
from storage.versions import VersionStore as Store
from tests.core.items.conftest import MakeStore, item
from tests.core.items.helpers import create, held_ids

KILL_EXIT = 86


def _compact_and_die_at(root: Path, kill_at: int, before: bool) -> None:
    """In the child: a compaction during whose fold two events publish deltas; the
    process ends without cleanup at the ``kill_at``-th commit (the fold's registration,
    then each rebased delta), before or after it."""
    from storage import Layout

    layout = Layout(root)
    real_fold, real_commit = compaction.fold_deltas, Store.commit
    calls = {"n": 0, "armed": 0}

    def fold(folder, deltas, recipe):  # type: ignore[no-untyped-def]
        real_fold(folder, deltas, recipe)
        create(layout, "late-1", [item(8001)])
        create(layout, "late-2", [item(8002)])
        calls["armed"] = 1  # the compaction's own commits from here on

    def commit(self: Store, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += calls["armed"]
        if calls["n"] == kill_at and before:
            os._exit(KILL_EXIT)
        out = real_commit(self, *args, **kwargs)
        if calls["n"] == kill_at:
            os._exit(KILL_EXIT)
        return out

    compaction.fold_deltas = fold  # type: ignore[assignment]
    Store.commit = commit  # type: ignore[method-assign]
    compact_current(layout)
    os._exit(0)


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
@pytest.mark.parametrize("kill_at", [1, 2, 3])  # the fold, rebased late-1, rebased late-2
def test_a_compaction_killed_while_rebasing_loses_and_duplicates_nothing(
    make_store: MakeStore, kill_at: int, before: bool
) -> None:
    store = make_store("Flat")
    for i in range(3):
        create(store.layout, f"e{i}", [item(7000 + i)])
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child ends in os._exit)
        try:
            _compact_and_die_at(store.layout.root, kill_at, before)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == KILL_EXIT

    wanted = {7000, 7001, 7002, 8001, 8002}
    fresh = VersionStore(store.layout)
    served = held_ids(Recaller.load(fresh)).tolist()  # verifies the whole chain
    assert wanted <= set(served) and len(served) == len(set(served))
    # What the dead compaction left (staging, registered versions off the lineage) goes
    # with the next runs, which succeed.
    assert compact_current(store.layout).compacted
    create(store.layout, "after", [item(8003)])
    served = held_ids(Recaller.load(VersionStore(store.layout))).tolist()
    assert wanted | {8003} <= set(served) and len(served) == len(set(served))
    current = fresh.open_current()
    lineage, node = set(), current
    while node is not None:
        lineage.add(node.version_id)
        parent = node.manifest.lineage.parent_version
        node = fresh.open_version(parent, verify=False) if parent else None
    registered = {v.version_id for v in fresh.list_versions()}
    assert registered <= lineage, registered - lineage
    assert not list(store.layout.staging_versions_dir.iterdir())
