"""``core.items_stream``: streamed events recorded one by one (each its own outcome and
acknowledgement) and published as one delta; where a restarting consumer reads back from;
the batch report. No Prefect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core import Recaller
from core.items import publish_catalogue
from core.items_report import render_batch_report
from core.items_stream import (
    EventOutcome,
    StreamedEvent,
    batch_of,
    catch_up_since,
    read_batch,
    record_events,
    write_batch,
)
from core.items_validation import UnsafeItemsPath
from storage import Layout
from storage.backends import open_catalogue
from storage.errors import NoCurrentVersionError
from tests.core.items.conftest import N_ITEMS, MakeStore, item
from tests.core.items.helpers import held_ids

CREATED, RETIRED = "towerflow.items.created", "towerflow.items.retired"


def ev(n: int, event: str = CREATED, **payload: object) -> StreamedEvent:
    return StreamedEvent(id=f"00000000-0000-0000-0000-{n:012d}", event=event, payload=payload)


def test_an_event_payload_becomes_its_batch_or_a_reason() -> None:
    b = batch_of(ev(1, event_id="e1", items=[item(1)]))
    assert (b.event_id, b.operation, b.path) == ("e1", "create", None)
    # Without an event_id the Prefect event id is the idempotency key.
    assert batch_of(ev(2, RETIRED, items=[10])).event_id == ev(2).id
    with pytest.raises(ValueError, match="exactly one of `items`"):
        batch_of(ev(3, event_id="e3"))
    with pytest.raises(ValueError, match=r"unknown payload field\(s\) \['extra'\]"):
        batch_of(ev(4, event_id="e4", items=[], extra=1))
    with pytest.raises(ValueError, match="not an items event"):
        batch_of(ev(5, "towerflow.items.deleted", items=[1]))
    with pytest.raises(ValueError, match="control characters"):
        batch_of(ev(6, event_id="a\nb", items=[1]))


def test_each_event_is_recorded_on_its_own_and_one_publish_serves_them_all(
    make_store: MakeStore,
) -> None:
    store = make_store("Flat")
    root = str(store.layout.root)
    parent = store.current()
    events = [
        ev(1, event_id="s-1", items=[item(1001), item(1002)]),
        ev(2, event_id="s-2"),  # names no items: fails alone
        ev(3, event_id="s-3", items=[item(1003), {"item_id": 1004, "category": 1}]),
        ev(4, RETIRED, event_id="s-4", items=[10, 999_999]),
        ev(5, event_id="s-1", items=[item(1001)]),  # a redelivery inside the batch
        ev(6, event_id="s-6", path="../../etc/passwd"),  # outside the inbox: fails alone
    ]
    outcomes, recorded = record_events(root, events)
    assert [o.event_id for o in outcomes] == ["s-1", "s-2", "s-3", "s-4", "s-1", "s-6"]
    assert [o.status for o in outcomes] == [
        "applied",
        "failed",
        "applied",
        "applied",
        "duplicate",
        "failed",
    ]
    assert (outcomes[0].inserted, outcomes[2].inserted, outcomes[2].rejected) == (2, 1, 1)
    assert outcomes[1].error is not None and "exactly one" in outcomes[1].error
    assert outcomes[5].error is not None and "inbox" in outcomes[5].error
    assert (outcomes[3].accepted, outcomes[3].updated) == (2, 1)  # 10 served; 999999 never
    assert [r.event_id for r in recorded] == ["s-1", "s-3", "s-4", "s-1"]
    catalogue = open_catalogue(Layout(store.layout.root))
    assert all(catalogue.has_event(e) for e in ("s-1", "s-3", "s-4"))
    assert not catalogue.has_event("s-2") and not catalogue.has_event("s-6")
    assert store.current() == parent  # recording publishes nothing

    version = publish_catalogue(root)
    assert version == store.current() != parent
    assert store.open_current().manifest.lineage.parent_version == parent  # one delta
    served = set(held_ids(Recaller.load(store)).tolist())
    assert {1001, 1002, 1003} <= served and 10 not in served and 1004 not in served
    assert len(served) == N_ITEMS + 3 - 1


def test_a_store_failure_stops_the_batch_instead_of_failing_events(tmp_path: Path) -> None:
    """No version published yet: not the event's fault, so the batch raises (its events
    are taken again) rather than reporting them failed."""
    with pytest.raises(NoCurrentVersionError, match="run the nightly flow once first"):
        record_events(str(tmp_path / "empty"), [ev(1, event_id="x", items=[item(1)])])


def test_a_restarting_consumer_reads_back_from_the_newest_recorded_event() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    hour, day = timedelta(hours=1), timedelta(days=1)
    assert catch_up_since(None, now) == now - day  # nothing recorded yet
    latest = (now - hour).isoformat(timespec="milliseconds")
    assert catch_up_since(latest, now) == now - hour - timedelta(minutes=15)
    old = (now - 3 * day).isoformat()
    assert catch_up_since(old, now) == now - day  # never beyond the window
    future = (now + hour).isoformat()  # a clock ahead: from now, less the margin
    assert catch_up_since(future, now, margin=timedelta(minutes=5)) == now - timedelta(minutes=5)


def test_the_batch_report_has_a_row_per_event_and_escapes_what_they_carry() -> None:
    outcomes = [
        EventOutcome(event_id="ok", operation="create", status="applied", received=2, inserted=2),
        EventOutcome(event_id="dup", operation="create", status="duplicate"),
        EventOutcome(
            event_id="| forged | row |",
            operation="create",
            status="failed",
            error="give exactly one of `items` or `path`\n| x |",
        ),
    ]
    md = render_batch_report(outcomes, "v1")
    assert "applied 1, duplicates 1, failed 1; CURRENT `v1`" in md
    assert "| ok | create | applied | 2 | 2 | 0 | 0 | 0 |  |" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 4  # the header and one row per event: nothing forged
    assert "\\| forged \\| row \\|" in md


def test_a_batch_travels_as_a_file_of_the_inbox_and_only_from_there(tmp_path: Path) -> None:
    events = [ev(1, event_id="a", items=[item(1)] * 2000), ev(2, RETIRED, items=[5])]
    name = write_batch(tmp_path, events)
    assert (tmp_path / "inbox" / name).is_file() and name.startswith("batch-2-events-")
    assert read_batch(tmp_path, name) == events
    (tmp_path / "secret.json").write_text("[]")
    with pytest.raises(UnsafeItemsPath, match="outside the inbox"):
        read_batch(tmp_path, "../secret.json")
    (tmp_path / "inbox" / "bad.json").write_text('[{"id": 1}]')
    with pytest.raises(ValueError, match=r"batch file bad\.json"):
        read_batch(tmp_path, "bad.json")
