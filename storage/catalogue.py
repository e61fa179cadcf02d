"""The item catalogue: a durable, append-only log of item upserts and retirements made
between nightly rebuilds, and the source of truth for which items must be served.

One SQLite file (`Layout.catalogue_db`, WAL, `synchronous=FULL`). Every append is one
`BEGIN IMMEDIATE` transaction that records the event id and the item entries together,
so after a crash an event is either wholly in the log or absent. An item is
*acknowledged* once `append_upserts` / `append_retirements` returned: it is then on disk
and every version published later includes it (see `core.catalogue_sync`).

Idempotency: an event id already in the log is a no-op (events are delivered at least
once), and so is an upsert whose category and content equal the item's latest entry, or a
retirement of an item whose latest entry is a retirement. Entries get increasing
sequence numbers (`seq`); writers are serialised by SQLite, so when a reader sees head
`H` every entry up to `H` is committed. A version records the `seq` it includes.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from storage._sqlite import connect, read, transaction
from storage.manifest import utc_now_iso

__all__ = [
    "AppendResult",
    "CatalogueChanges",
    "CatalogueLike",
    "CatalogueLog",
    "EntryRow",
    "ItemUpsert",
    "Op",
    "changes_from_rows",
    "plan_append",
    "upsert_rows",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS entries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        item_id INTEGER NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('upsert', 'retire')),
        category INTEGER,
        content BLOB,
        digest TEXT,
        ts TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS entries_item ON entries (item_id, seq)",
    """CREATE TABLE IF NOT EXISTS events (
        event_id TEXT PRIMARY KEY,
        op TEXT NOT NULL,
        received_at TEXT NOT NULL,
        n_items INTEGER NOT NULL,
        n_changed INTEGER NOT NULL,
        last_seq INTEGER NOT NULL
    )""",
)

_TABLES: Final = ("entries", "events")

Op = Literal["upsert", "retire"]


@dataclass(frozen=True)
class ItemUpsert:
    """One validated item: ID, category index and (C,) float32 content features."""

    item_id: int
    category: int
    content: npt.NDArray[np.float32]


@dataclass(frozen=True)
class AppendResult:
    """What an append did. `changed` got new entries; `unchanged` were already in that
    state (content idempotency). A `duplicate` event changed nothing."""

    event_id: str
    duplicate: bool
    changed: tuple[int, ...]
    unchanged: tuple[int, ...]
    head: int  # log head right after the append (or at the duplicate check)


@dataclass(frozen=True)
class CatalogueChanges:
    """Latest state, as of entry `upto`, of every item with an entry in `(after, upto]`.

    n upserted items with C content floats, m retired items; an item is in one of them.
    """

    after: int
    upto: int
    upsert_id: npt.NDArray[np.int64]  # (n,) sorted
    upsert_category: npt.NDArray[np.int32]  # (n,)
    upsert_content: npt.NDArray[np.float32]  # (n, C)
    retired_id: npt.NDArray[np.int64]  # (m,) sorted
    event_ids: tuple[str, ...]  # events with entries in (after, upto], in log order

    @property
    def empty(self) -> bool:
        return len(self.upsert_id) == 0 and len(self.retired_id) == 0


def _digest(category: int, content: npt.NDArray[np.float32]) -> str:
    h = hashlib.sha256(int(category).to_bytes(8, "little", signed=True))
    h.update(np.ascontiguousarray(content, "<f4").tobytes())
    return h.hexdigest()


def upsert_rows(event_id: str, items: Sequence[ItemUpsert]) -> list[EntryRow]:
    """(item ID, category, content as little-endian float32 bytes, digest) of each item;
    raises ValueError when an ID appears twice (both backends store these rows)."""
    ids = [int(it.item_id) for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"event {event_id!r}: an item ID appears twice in one append")
    return [
        (
            int(it.item_id),
            int(it.category),
            np.ascontiguousarray(it.content, "<f4").tobytes(),
            _digest(it.category, it.content),
        )
        for it in items
    ]


# (item ID, category, content as little-endian float32 bytes, digest); None for retirements.
EntryRow = tuple[int, int | None, bytes | None, str | None]


@dataclass(frozen=True)
class AppendPlan:
    """What an append writes once the event is new: entries for the items whose latest
    state differs, none for those already in that state (content idempotency)."""

    event_id: str
    op: Op
    changed: list[int]
    unchanged: list[int]
    # (event_id, item_id, op, category, content, digest, ts): the entries table's columns
    entries: list[tuple[str, int, Op, int | None, bytes | None, str | None, str]]

    def result(self, head: int) -> AppendResult:
        """The append's result once committed at ``head`` (logged)."""
        log.info(
            "event %s: %s %d items (%d unchanged), head %d",
            self.event_id,
            self.op,
            len(self.changed),
            len(self.unchanged),
            head,
        )
        return AppendResult(self.event_id, False, tuple(self.changed), tuple(self.unchanged), head)


def plan_append(
    event_id: str,
    op: Op,
    rows: Sequence[EntryRow],
    latest: Mapping[int, tuple[str, str | None]],
    now: str,
) -> AppendPlan:
    """Split ``rows`` by each item's ``latest`` (op, digest) entry (both backends)."""
    changed, unchanged, entries = [], [], []
    for item_id, category, content, digest in rows:
        if latest.get(item_id) == (op, digest):
            unchanged.append(item_id)
            continue
        entries.append((event_id, item_id, op, category, content, digest, now))
        changed.append(item_id)
    return AppendPlan(event_id, op, changed, unchanged, entries)


class CatalogueLike(Protocol):
    """What a store's item catalogue does, in SQLite (`CatalogueLog`) or PostgreSQL
    (`storage.pg_catalogue.PgCatalogueLog`); `storage.backends.open_catalogue` picks one."""

    @property
    def path(self) -> object:
        """Where it lives (a file, or a URL without password), for messages."""
        ...

    def append_upserts(self, event_id: str, items: Sequence[ItemUpsert]) -> AppendResult: ...

    def append_retirements(self, event_id: str, item_ids: Sequence[int]) -> AppendResult: ...

    def head(self) -> int: ...

    def has_event(self, event_id: str) -> bool: ...

    def event_seq(self, event_id: str) -> int | None: ...

    def latest_event_at(self) -> str | None: ...

    def changes(self, after: int, upto: int | None = None) -> CatalogueChanges: ...


class CatalogueLog:
    """Access to `catalogue.sqlite`; each method is one short connection and transaction.

    Constructing it touches no disk; the file is created by the first write. Reads never
    write (see `storage._sqlite.read`: they work on a read-only store), and reads of a
    missing file see an empty log (head 0). Appends to a read-only store raise
    `StoreReadOnlyError`.
    """

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._schema_ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A writer's connection (WAL; the schema created on the first one)."""
        schema = () if self._schema_ready else _SCHEMA
        with connect(self.path, self.busy_timeout_s, schema, wal=True) as conn:
            self._schema_ready = True
            yield conn

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T | None:
        """`query` on a read-only view, in one snapshot; None for an empty log."""
        return read(self.path, self.busy_timeout_s, query, tables=_TABLES, wal=True)

    # -- writing ---------------------------------------------------------------------------

    def append_upserts(self, event_id: str, items: Sequence[ItemUpsert]) -> AppendResult:
        """Record `items` (created or changed) under `event_id`, atomically and durably."""
        return self._append(event_id, "upsert", upsert_rows(event_id, items))

    def append_retirements(self, event_id: str, item_ids: Sequence[int]) -> AppendResult:
        """Record that `item_ids` must no longer be served, atomically and durably."""
        ids = [int(i) for i in item_ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"event {event_id!r}: an item ID appears twice in one append")
        return self._append(event_id, "retire", [(i, None, None, None) for i in ids])

    def _append(
        self,
        event_id: str,
        op: Op,
        rows: list[EntryRow],
    ) -> AppendResult:
        if not event_id:
            raise ValueError("event_id must be a non-empty string")
        now = utc_now_iso()
        with self._connect() as conn, transaction(conn):
            if conn.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone():
                log.info("event %s was already applied: no-op", event_id)
                return AppendResult(event_id, True, (), (), _head(conn))
            latest = {}
            for item_id, *_ in rows:  # each item's latest entry, by the (item_id, seq) index
                last = conn.execute(
                    "SELECT op, digest FROM entries WHERE item_id = ? ORDER BY seq DESC LIMIT 1",
                    (item_id,),
                ).fetchone()
                if last is not None:
                    latest[item_id] = (last[0], last[1])
            plan = plan_append(event_id, op, rows, latest, now)
            conn.executemany(
                "INSERT INTO entries (event_id, item_id, op, category, content, digest, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                plan.entries,
            )
            head = _head(conn)
            conn.execute(
                "INSERT INTO events (event_id, op, received_at, n_items, n_changed, last_seq) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, op, now, len(rows), len(plan.changed), head),
            )
        return plan.result(head)

    # -- reading ---------------------------------------------------------------------------

    def head(self) -> int:
        """Sequence number of the newest entry (0 for an empty log)."""
        return self._read(_head) or 0

    def has_event(self, event_id: str) -> bool:
        """Whether `event_id` was applied (acknowledged)."""
        return self.event_seq(event_id) is not None

    def event_seq(self, event_id: str) -> int | None:
        """Log head right after `event_id` was appended (a version whose `catalogue_seq`
        reaches it includes the event), or None if the event is not in the log."""
        row = self._read(
            lambda conn: conn.execute(
                "SELECT last_seq FROM events WHERE event_id = ?", (event_id,)
            ).fetchone()
        )
        return None if row is None else int(row[0])

    def latest_event_at(self) -> str | None:
        """When the newest event was recorded (ISO-8601 UTC, `utc_now_iso`), or None for
        an empty log: where an events consumer that restarts catches up from."""
        row = self._read(
            lambda conn: conn.execute("SELECT MAX(received_at) FROM events").fetchone()
        )
        return None if row is None or row[0] is None else str(row[0])

    def changes(self, after: int, upto: int | None = None) -> CatalogueChanges:
        """Latest state (as of `upto`, default the head) of items with entries in
        `(after, upto]`. `changes(0)` is the whole catalogue."""

        def query(conn: sqlite3.Connection) -> tuple[int, list[Any], list[Any]]:
            end = _head(conn) if upto is None else upto
            rows = conn.execute(
                "SELECT item_id, op, category, content FROM entries WHERE seq IN ("
                "SELECT MAX(seq) FROM entries WHERE seq > ? AND seq <= ? GROUP BY item_id)",
                (after, end),
            ).fetchall()
            events = conn.execute(
                "SELECT event_id FROM entries WHERE seq > ? AND seq <= ? "
                "GROUP BY event_id ORDER BY MIN(seq)",
                (after, end),
            ).fetchall()
            return end, rows, events

        found = self._read(query)
        if found is None:
            return changes_from_rows(after, max(after, upto or 0), [], ())
        end, rows, events = found
        return changes_from_rows(after, end, rows, tuple(e[0] for e in events))


def changes_from_rows(
    after: int,
    upto: int,
    rows: list[tuple[int, str, int | None, bytes | None]],
    events: tuple[str, ...],
) -> CatalogueChanges:
    """The `CatalogueChanges` of the latest entry per item in `(after, upto]`: rows of
    (item ID, op, category, content bytes) and the events' ids in log order."""
    ups = sorted((r for r in rows if r[1] == "upsert"), key=lambda r: r[0])
    retired = np.array(sorted(r[0] for r in rows if r[1] == "retire"), np.int64)
    contents = [np.frombuffer(r[3] or b"", "<f4") for r in ups]
    dims = {len(c) for c in contents}
    if len(dims) > 1:
        raise ValueError(f"catalogue entries ({after}, {upto}] mix content sizes {sorted(dims)}")
    content = np.stack(contents).astype(np.float32) if contents else np.zeros((0, 0), np.float32)
    return CatalogueChanges(
        after=after,
        upto=upto,
        upsert_id=np.array([r[0] for r in ups], np.int64),
        upsert_category=np.array([r[2] for r in ups], np.int32),
        upsert_content=content,
        retired_id=retired,
        event_ids=events,
    )


def _head(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(seq) FROM entries").fetchone()
    return int(row[0] or 0)
