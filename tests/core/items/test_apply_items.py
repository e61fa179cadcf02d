"""``core.apply_items``: one items event without Prefect, as the new-items flow applies it
(record = acknowledge, then publish CURRENT + the entries it lacks), idempotently."""

from __future__ import annotations

from core import ItemsBatch, Recaller, apply_items
from tests.core.items.conftest import N_ITEMS, MakeStore, item
from tests.core.items.helpers import held_ids


def test_apply_items_records_publishes_and_ignores_a_repeat(make_store: MakeStore) -> None:
    store = make_store("Flat")
    parent = store.current()
    root = str(store.layout.root)
    batch = ItemsBatch(
        event_id="nb-1",
        operation="create",
        items=[item(1001), {"item_id": 1002, "category": 1, "content": [0.0]}],
    )
    recorded, version = apply_items(root, batch)
    assert (recorded.accepted, recorded.rejected, recorded.inserted) == (1, 1, 1)
    assert "content" in next(iter(recorded.reasons))  # the wrong-length vector, by reason
    assert version == store.current() != parent
    served = set(held_ids(Recaller.load(store)).tolist())
    assert 1001 in served and 1002 not in served and len(served) == N_ITEMS + 1

    again, same = apply_items(root, batch)
    assert again.duplicate and same == version  # at-least-once delivery: a no-op
