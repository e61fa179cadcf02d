"""The items consumer of `towerflow serve`: a long-lived reader of items events that runs
the `new-items-batch` flow in its own process, on whatever arrived together.

Why not one flow run per event through the deployment's trigger: Prefect's runner starts
each run in a new Python process, which then imports torch and verifies and loads the
model and the served item IDs afresh (seconds at a million items, and a CPU-second or
more each, so a stream of 10 events/s could never be absorbed on a small machine). Here
the process stays: the publisher keeps its verified model and rows between batches
(``core.delta_publish``), and the events that queued while a batch ran go into the next
one (one delta, each event's outcome still its own).

Delivery: Prefect's event stream (a websocket; ``PrefectEventSubscriber``, which
reconnects and drops repeats by event id). On start, the events since the newest one the
store recorded (less a margin; ``core.items_stream.catch_up_since``) are read back from
the server first, so events sent while no consumer ran are applied, in order, as long as
the server keeps them (its event retention, 7 days by default). An event seen twice is a
duplicate in the catalogue. A batch whose flow run fails (the store unwritable, no
version yet) is taken again after a back-off: its events were not all acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from core.items_stream import (
    EVENT_OPERATIONS,
    EventOutcome,
    StreamedEvent,
    catch_up_since,
    latest_recorded,
    remove_batch,
    write_batch,
)

if TYPE_CHECKING:
    from prefect.events import Event

__all__ = ["ConsumerStats", "ItemsConsumer"]

log = logging.getLogger(__name__)

_SEEN_IDS: Final = 100_000  # Prefect event ids remembered to drop repeats
_LIVE_OVERLAP: Final = timedelta(minutes=1)  # the live stream re-reads this far back
_PAGE: Final = 50  # events per page read back (the server's maximum)

BatchFlow = Callable[..., list[EventOutcome]]


@dataclass
class ConsumerStats:
    """Counters of a consumer (read them under no lock: each is one int)."""

    received: int = 0  # events queued (repeats dropped)
    caught_up: int = 0  # of which read back from the server on start
    done: int = 0  # events whose batch completed
    batches: int = 0
    failed_batches: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # status -> events
    last_batch_s: float = 0.0
    last_error: str | None = None


def _items_of(payload: dict[str, Any]) -> int:
    items = payload.get("items")
    return len(items) if isinstance(items, list) else 1


class ItemsConsumer:
    """Reads items events from the Prefect server at PREFECT_API_URL and applies them to
    the store at ``root`` in batches of at most ``max_events`` events and ``max_items``
    inline items (an event is never split), through ``flow`` (default
    ``flows.new_items.new_items_batch``).

    ``start()`` returns once past events are queued and the live stream is subscribed;
    ``stop()`` lets the running batch finish (queued events not yet taken are read back
    by the next start)."""

    def __init__(
        self,
        root: str | Path,
        *,
        max_events: int = 200,
        max_items: int = 5_000,
        margin: timedelta = timedelta(minutes=15),
        window: timedelta = timedelta(days=1),
        retry_s: float = 2.0,
        settle_s: float = 10.0,
        flow: BatchFlow | None = None,
    ) -> None:
        if max_events < 1 or max_items < 1:
            raise ValueError("max_events and max_items must be positive")
        self.root = str(root)
        self.max_events, self.max_items = max_events, max_items
        self.margin, self.window, self.retry_s = margin, window, retry_s
        self.settle_s = settle_s
        self._flow = flow
        self.stats = ConsumerStats()
        self._queue: deque[StreamedEvent] = deque()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._listen_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._threads: list[threading.Thread] = []

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> None:
        """Start reading and applying; raise when the server cannot be read."""
        # Each thread runs in a copy of the caller's context: Prefect's settings (the API
        # URL a test harness or `temporary_settings` set) live in context variables.
        self._threads = [
            threading.Thread(
                target=contextvars.copy_context().run, args=(target,), name=name, daemon=True
            )
            for target, name in (
                (self._listen_thread, "items-listener"),
                (self._work, "items-worker"),
            )
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + timeout_s
        while not self._subscribed.wait(0.1):
            if self._listen_error is not None or time.monotonic() > deadline:
                self.stop()
                why = self._listen_error or f"no subscription within {timeout_s} s"
                raise RuntimeError(f"the items consumer cannot read events: {why}")
        log.info("listening for items events (store %s)", self.root)

    def stop(self, timeout_s: float = 300.0) -> None:
        """Stop reading; wait (up to ``timeout_s``) for the running batch to finish."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            # RuntimeError: the loop closed meanwhile (the listener has ended).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        for t in self._threads:
            t.join(timeout_s)

    @property
    def backlog(self) -> int:
        """Events queued and not yet taken into a batch."""
        return len(self._queue)

    # -- reading ---------------------------------------------------------------------------

    def _offer(self, event: Event) -> None:
        key = str(event.id)
        if key in self._seen or event.event not in EVENT_OPERATIONS:
            return
        self._seen[key] = None
        if len(self._seen) > _SEEN_IDS:
            self._seen.popitem(last=False)
        streamed = StreamedEvent(id=key, event=event.event, payload=dict(event.payload))
        with self._cond:
            self._queue.append(streamed)
            self.stats.received += 1
            self._cond.notify_all()

    def _listen_thread(self) -> None:
        try:
            asyncio.run(self._listen())
        except BaseException as e:  # reported to start() and the log
            if not self._stopping.is_set():
                self._listen_error = e
                log.error("the items listener stopped: %s", e)

    async def _listen(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        now = datetime.now(UTC)
        since = catch_up_since(latest_recorded(self.root), now, self.margin, self.window)
        await self._catch_up(since, now)
        live_since = now - _LIVE_OVERLAP
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                await self._stream(live_since, since)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the server went away: read again from where we were
                if not self._subscribed.is_set():
                    raise
                log.warning("items event stream lost (%s); reconnecting in %.0f s", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                since = live_since = datetime.now(UTC) - self.margin

    async def _catch_up(self, since: datetime, until: datetime) -> None:
        """Queue the events of [since, until] the server holds, oldest first."""
        from prefect.client.orchestration import get_client
        from prefect.events.filters import (
            EventFilter,
            EventNameFilter,
            EventOccurredFilter,
            EventOrder,
        )

        wanted = EventFilter(
            occurred=EventOccurredFilter(since=since, until=until),
            event=EventNameFilter(name=list(EVENT_OPERATIONS)),
            order=EventOrder.ASC,
        )
        before = self.stats.received
        async with get_client() as client:
            page = await client.read_events(filter=wanted, limit=_PAGE)
            while True:
                for event in page.events:
                    self._offer(event)
                if not page.next_page:
                    break
                page = await client.read_events_page(str(page.next_page))
        self.stats.caught_up += self.stats.received - before
        log.info(
            "items events since %s read back: %d queued", since.isoformat(), self.stats.caught_up
        )

    async def _settle(self, since: datetime, until: datetime) -> None:
        """Read back [since, until] again once the server has stored what it received
        before the subscription: its event persister writes in batches (every 5 s by
        default), so an event sent just before the stream opened may be neither in the
        first read-back nor in the stream."""
        await asyncio.sleep(self.settle_s)
        try:
            await self._catch_up(since, until)
        except Exception as e:  # the stream goes on; the next start reads back again
            log.warning("reading back items events failed: %s", e)

    async def _stream(self, since: datetime, catch_up_since: datetime) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

        live = EventFilter(
            # `until` defaults to now: the live stream would drop every later event.
            occurred=EventOccurredFilter(
                since=since, until=datetime.now(UTC) + timedelta(days=3650)
            ),
            event=EventNameFilter(name=list(EVENT_OPERATIONS)),
        )
        async with get_events_subscriber(filter=live) as subscriber:
            settle = asyncio.create_task(self._settle(catch_up_since, datetime.now(UTC)))
            self._subscribed.set()
            try:
                async for event in subscriber:
                    self._offer(event)
            finally:
                settle.cancel()

    # -- applying --------------------------------------------------------------------------

    def _take(self, wait_s: float | None, limit: int | None = None) -> list[StreamedEvent]:
        """The next batch: every queued event up to the limits (waits for the first)."""
        with self._cond:
            if not self._queue and not self._stopping.is_set():
                self._cond.wait(wait_s)
            batch: list[StreamedEvent] = []
            items = 0
            while self._queue and len(batch) < min(self.max_events, limit or self.max_events):
                n = _items_of(self._queue[0].payload)
                if batch and items + n > self.max_items:
                    break
                batch.append(self._queue.popleft())
                items += n
            return batch

    def _requeue(self, batch: list[StreamedEvent]) -> None:
        with self._cond:
            self._queue.extendleft(reversed(batch))

    def _run(self, batch: list[StreamedEvent]) -> list[EventOutcome]:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        flow = self._flow
        if flow is None:
            from flows.new_items import new_items_batch

            flow = new_items_batch
        # No flow run heartbeats: their thread sleeps in 1 s steps and the run's end waits
        # for it (0.8 s of a 1.1 s run, measured). These runs last about a second; a
        # heartbeat (every 180 s by default) would never be sent, and this consumer
        # reports a failed batch itself.
        name = write_batch(self.root, batch)  # the events travel as a file of the inbox
        try:
            with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                return flow(batch=name, storage_root=self.root)
        finally:
            remove_batch(self.root, name)

    def _work(self) -> None:
        retry = False  # the last batch failed: its events (or its publish) are still owed
        backoff = self.retry_s
        limit: int | None = None  # events per batch while retrying a failed one
        while True:
            batch = self._take(backoff if retry else 1.0, limit)
            if self._stopping.is_set():
                self._requeue(batch)
                break
            if not batch and not retry:
                continue
            started = time.perf_counter()
            try:
                outcomes = self._run(batch)
            except Exception as e:  # the flow run's log has the traceback
                self.stats.failed_batches += 1
                self.stats.last_error = f"{type(e).__name__}: {e}"
                log.error(
                    "a batch of %d items events failed (%s); retrying in %.0f s",
                    len(batch),
                    self.stats.last_error,
                    backoff,
                )
                self._requeue(batch)
                retry = True
                # Halve the batch each time: an event that fails every batch it is in
                # (it should fail alone, by its ValueError) then holds up only itself.
                limit = max(1, len(batch) // 2)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            retry, backoff, limit = False, self.retry_s, None
            self.stats.last_batch_s = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.done += len(batch)
            counts = Counter(o.status for o in outcomes)
            for status, n in counts.items():
                self.stats.outcomes[status] = self.stats.outcomes.get(status, 0) + n
            log.info(
                "%d items events in %.2f s (%s); %d queued",
                len(batch),
                self.stats.last_batch_s,
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "publish only",
                self.backlog,
            )
