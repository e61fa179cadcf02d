"""``flows.items_consumer.ItemsConsumer`` against the session's Prefect server: events sent
before it starts are read back, live ones are streamed, repeats dropped, events that
queue together go into one `new-items-batch` run (one delta) with each event's own
outcome, and a batch whose run fails is taken again. Batch limits without a server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import Recaller
from core.items_stream import EventOutcome, StreamedEvent, read_batch
from flows.items_consumer import ItemsConsumer
from flows.new_items import new_items_batch
from storage import Layout, VersionStore
from storage.backends import open_catalogue
from tests.core.items.conftest import item, publish_mini_version
from tests.core.items.helpers import held_ids

CREATED, RETIRED = "towerflow.items.created", "towerflow.items.retired"


def _emit(name: str, payload: dict[str, Any], prefect_id: uuid.UUID | None = None) -> None:
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    emit_event(
        name,
        resource={"prefect.resource.id": "towerflow.items.test"},
        payload=payload,
        id=prefect_id or uuid.uuid4(),
    )
    EventsWorker.drain_all(timeout=30)


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Recording:
    """The batch flow, recording each batch's events and outcomes; ``fail`` first calls
    raise before anything is recorded (a store that cannot be written)."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.batches: list[list[str]] = []
        self.failed: list[int] = []  # sizes of the batches that failed
        self.outcomes: dict[str, list[EventOutcome]] = {}
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: str, storage_root: str) -> list[EventOutcome]:
        self.gate.wait(60)
        events = read_batch(storage_root, batch)
        if self.fail:
            self.fail -= 1
            self.failed.append(len(events))
            raise OSError("store unwritable")
        self.batches.append([str(e.payload.get("event_id")) for e in events])
        outcomes = new_items_batch(batch=batch, storage_root=storage_root)
        for o in outcomes:
            self.outcomes.setdefault(o.event_id, []).append(o)
        return outcomes


@pytest.mark.prefect
def test_events_before_and_after_start_are_applied_each_with_its_own_outcome(
    prefect_harness: None, tmp_path: Path
) -> None:
    store = publish_mini_version(tmp_path / "store")
    root = str(store.layout.root)
    tag = uuid.uuid4().hex[:8]
    # Sent while no consumer runs: read back from the server on start.
    _emit(CREATED, {"event_id": f"{tag}-a", "items": [item(2001)]})
    _emit(CREATED, {"event_id": f"{tag}-bad"})  # names no items
    flow = Recording()
    consumer = ItemsConsumer(root, flow=flow)
    consumer.start()
    try:
        _wait("the events sent before start", lambda: f"{tag}-bad" in flow.outcomes)
        assert consumer.stats.caught_up >= 2
        # Live: held back while four arrive, so they go into one batch (one delta).
        flow.gate.clear()
        _emit(CREATED, {"event_id": f"{tag}-gate", "items": [item(2002)]})
        _wait(
            "the gated batch to start",
            lambda: consumer.backlog == 0 and consumer.stats.received >= 3,
        )
        parent_count = len(store.list_versions())
        _emit(CREATED, {"event_id": f"{tag}-b", "items": [item(2003), item(2004)]})
        _emit(RETIRED, {"event_id": f"{tag}-r", "items": [10]})
        _emit(CREATED, {"event_id": f"{tag}-a", "items": [item(2001)]})  # redelivered
        same_prefect_id = uuid.uuid4()
        _emit(CREATED, {"event_id": f"{tag}-c", "items": [item(2005)]}, same_prefect_id)
        _emit(CREATED, {"event_id": f"{tag}-c", "items": [item(2005)]}, same_prefect_id)
        _wait("four events queued", lambda: consumer.backlog == 4)
        flow.gate.set()
        _wait("the live events", lambda: f"{tag}-c" in flow.outcomes)
    finally:
        consumer.stop()
    mine = [b for b in flow.batches if any(e.startswith(tag) for e in b)]
    assert [f"{tag}-b", f"{tag}-r", f"{tag}-a", f"{tag}-c"] in mine  # one batch, in order
    status = {e: [o.status for o in os_] for e, os_ in flow.outcomes.items() if e.startswith(tag)}
    assert status == {
        f"{tag}-a": ["applied", "duplicate"],
        f"{tag}-bad": ["failed"],
        f"{tag}-gate": ["applied"],
        f"{tag}-b": ["applied"],
        f"{tag}-r": ["applied"],
        f"{tag}-c": ["applied"],  # the repeated Prefect event was dropped before the flow
    }
    assert "exactly one" in (flow.outcomes[f"{tag}-bad"][0].error or "")
    served = set(held_ids(Recaller.load(store)).tolist())
    assert {2001, 2002, 2003, 2004, 2005} <= served and 10 not in served
    # The batch of four published one delta on top of the gated batch's.
    assert len(store.list_versions()) - parent_count <= 2


@pytest.mark.prefect
def test_a_batch_whose_run_fails_is_taken_again(prefect_harness: None, tmp_path: Path) -> None:
    store = publish_mini_version(tmp_path / "store")
    root = str(store.layout.root)
    flow = Recording(fail=2)
    consumer = ItemsConsumer(root, flow=flow, retry_s=0.2)
    consumer.start()
    tag = f"retry-{uuid.uuid4().hex[:8]}"
    try:
        flow.gate.clear()  # four events queue, then the first two runs fail
        for k in range(4):
            _emit(CREATED, {"event_id": f"{tag}-{k}", "items": [item(3001 + k)]})
        _wait("four events queued", lambda: consumer.backlog >= 3)
        flow.gate.set()
        _wait("the retried events", lambda: all(f"{tag}-{k}" in flow.outcomes for k in range(4)))
    finally:
        consumer.stop()
    assert consumer.stats.failed_batches == 2
    assert flow.failed[1] <= max(1, flow.failed[0] // 2)  # a failed batch is halved
    catalogue = open_catalogue(Layout(Path(root)))
    for k in range(4):
        assert [o.status for o in flow.outcomes[f"{tag}-{k}"]] == ["applied"]
        assert catalogue.has_event(f"{tag}-{k}")
    served = set(held_ids(Recaller.load(VersionStore(Layout(Path(root))))).tolist())
    assert {3001, 3002, 3003, 3004} <= served
    assert not list(Layout(Path(root)).inbox_dir.glob("batch-*"))  # no batch file left


def test_batches_keep_to_their_limits_and_never_split_an_event(tmp_path: Path) -> None:
    consumer = ItemsConsumer(tmp_path, max_events=3, max_items=5)

    def queued(n_items: list[int]) -> None:
        for i, n in enumerate(n_items):
            e = StreamedEvent(id=str(i), event=CREATED, payload={"items": list(range(n))})
            consumer._queue.append(e)

    queued([2, 2, 2, 9, 1, 1, 1, 1])
    sizes = []
    while consumer.backlog:
        sizes.append([len(e.payload["items"]) for e in consumer._take(0)])
    # At most 5 items (an event above the limit goes alone) and 3 events per batch.
    assert sizes == [[2, 2], [2], [9], [1, 1, 1], [1]]
