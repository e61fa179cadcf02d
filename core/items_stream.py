"""Items events taken as a stream: many events recorded one by one (each acknowledged on
its own), then published as one delta. What the long-lived items consumer of `towerflow
serve` (``flows.items_consumer``) does with each batch of events that arrived together;
no Prefect here.

A streamed event is what Prefect delivered: its id, its name (`towerflow.items.created`
or `.retired`) and its payload (`{"event_id", "items"}` or `{"event_id", "path"}`, the
same payload the new-items deployment's trigger templates read). Each event's outcome is
reported on its own: applied (with its item counts), a duplicate, or failed (a payload
that names no items, a file outside the inbox...), and one event's failure never stops
the others.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError

from core.items import CurrentView, OnRejected, RecordSummary, record_items
from core.items_validation import ItemsBatch, excerpt, resolve_inbox_path
from core.progress import StepLogger
from storage import Layout, atomic_path
from storage.backends import open_catalogue

__all__ = [
    "EVENT_OPERATIONS",
    "EventOutcome",
    "StreamedEvent",
    "batch_of",
    "catch_up_since",
    "latest_recorded",
    "read_batch",
    "record_events",
    "remove_batch",
    "write_batch",
]

log = logging.getLogger(__name__)

# The Prefect event names the consumer takes, and the operation each one asks for.
EVENT_OPERATIONS: Final[Mapping[str, Literal["create", "retire"]]] = {
    "towerflow.items.created": "create",
    "towerflow.items.retired": "retire",
}

_ERROR_CHARS: Final = 500


class StreamedEvent(BaseModel):
    """One delivered items event, as the consumer hands it to the batch flow (flow
    parameters: small JSON)."""

    id: str  # Prefect's event id (the idempotency key when the payload has no event_id)
    event: str  # its name, one of EVENT_OPERATIONS
    payload: dict[str, Any]


class EventOutcome(BaseModel):
    """What one event of a batch came to."""

    event_id: str
    operation: str
    status: Literal["applied", "duplicate", "failed"]
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None  # why a failed event was not recorded

    @classmethod
    def of(cls, r: RecordSummary) -> EventOutcome:
        return cls(
            event_id=r.event_id,
            operation=r.operation,
            status="duplicate" if r.duplicate else "applied",
            received=r.received,
            accepted=r.accepted,
            rejected=r.rejected,
            inserted=r.inserted,
            updated=r.updated,
            unchanged=r.accepted - r.changed,
        )


def batch_of(event: StreamedEvent) -> ItemsBatch:
    """The `ItemsBatch` an event asks for; a ``ValueError`` naming the problem when its
    name or payload cannot be one (nothing is recorded for it then)."""
    operation = EVENT_OPERATIONS.get(event.event)
    if operation is None:
        raise ValueError(
            f"event {event.event!r} is not an items event ({sorted(EVENT_OPERATIONS)})"
        )
    p = event.payload
    unknown = sorted(set(p) - {"event_id", "items", "path"})
    if unknown:
        raise ValueError(f"unknown payload field(s) {unknown[:5]}")
    event_id = p.get("event_id")
    try:
        return ItemsBatch(
            event_id=event.id if event_id is None else event_id,
            operation=operation,
            items=p.get("items"),
            path=p.get("path"),
        )
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ValueError(problems or str(e)) from None


def _event_id(event: StreamedEvent) -> str:
    """The id an event is reported under, even when its payload is unusable (then quoted
    and escaped: it may be anything)."""
    raw = event.payload.get("event_id")
    if raw is None:
        return event.id
    if isinstance(raw, str) and raw.isprintable() and 0 < len(raw) <= 200:
        return raw
    return excerpt(raw, 200)


def _reason(error: Exception) -> str:
    """An error as one line of at most _ERROR_CHARS (validators already escape the input
    they quote)."""
    flat = " ".join(str(error).splitlines())
    return flat if len(flat) <= _ERROR_CHARS else flat[:_ERROR_CHARS] + "..."


def record_events(
    root: str,
    events: Sequence[StreamedEvent],
    *,
    logger: StepLogger = log,
    on_rejected: OnRejected | None = None,
) -> tuple[list[EventOutcome], list[RecordSummary]]:
    """Record each event in order (``core.items.record_items``: validated, appended,
    acknowledged on its own). Returns every event's outcome, in order, and the summaries
    of those recorded (applied or duplicate).

    An event that cannot be recorded (a bad payload, an unusable file: a ``ValueError``)
    is reported failed, with its reason, and the rest go on; anything else (the store
    cannot be written, no version published yet) stops the batch and propagates: the
    events after it were not acknowledged and are delivered again."""
    outcomes: list[EventOutcome] = []
    summaries: list[RecordSummary] = []
    current = CurrentView(Path(root))  # read once for the batch, not per event
    for event in events:
        operation = EVENT_OPERATIONS.get(event.event, event.event)
        try:
            batch = batch_of(event)
            summary = record_items(
                root, batch, logger=logger, on_rejected=on_rejected, current=current
            )
        except ValueError as e:
            reason = _reason(e)
            logger.warning("event %s (%s) failed: %s", _event_id(event), operation, reason)
            outcomes.append(
                EventOutcome(
                    event_id=_event_id(event), operation=operation, status="failed", error=reason
                )
            )
            continue
        summaries.append(summary)
        outcomes.append(EventOutcome.of(summary))
    return outcomes, summaries


def catch_up_since(
    latest_recorded: str | None,
    now: datetime,
    margin: timedelta = timedelta(minutes=15),
    window: timedelta = timedelta(days=1),
) -> datetime:
    """From when a consumer that (re)starts reads past events: the newest recorded event's
    time less ``margin`` (senders' clocks and delivery delays), and never further back
    than ``window`` (nor before a store that recorded nothing: then ``now - window``).
    Events seen twice are duplicates, dropped by their event id."""
    floor = now - window
    if latest_recorded is None:
        return floor
    latest = datetime.fromisoformat(latest_recorded)
    return max(floor, min(now, latest) - margin)


_EVENTS: Final = TypeAdapter(list[StreamedEvent])
BATCH_PREFIX: Final = "batch-"


def write_batch(root: str | Path, events: Sequence[StreamedEvent]) -> str:
    """Write ``events`` to a file of the store's inbox (atomically); returns its name.
    A batch's payloads travel to its flow run this way: Prefect refuses flow run
    parameters over 512 KB, and one event may carry 1 MB of inline items."""
    inbox = Layout(Path(root)).inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    name = f"{BATCH_PREFIX}{len(events)}-events-{uuid.uuid4().hex[:12]}.json"
    with atomic_path(inbox / name) as tmp:
        tmp.write_bytes(_EVENTS.dump_json(list(events)))
    return name


def read_batch(root: str | Path, name: str) -> list[StreamedEvent]:
    """The events of the inbox file ``name`` (``write_batch``); confined to the inbox
    like an event's own file (`UnsafeItemsPath`)."""
    path = resolve_inbox_path(Layout(Path(root)).inbox_dir, name, name)
    try:
        return _EVENTS.validate_json(path.read_bytes())
    except (OSError, ValidationError, json.JSONDecodeError) as e:
        raise ValueError(f"batch file {name}: {e}") from e


def remove_batch(root: str | Path, name: str) -> None:
    """Remove the inbox file ``name`` that ``write_batch`` wrote (gone already: fine)."""
    (Layout(Path(root)).inbox_dir / Path(name).name).unlink(missing_ok=True)


def latest_recorded(root: str | Path) -> str | None:
    """When the store's catalogue recorded its newest event (ISO-8601), None if never."""
    return open_catalogue(Layout(Path(root))).latest_event_at()
