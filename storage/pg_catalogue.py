"""The item catalogue of a shared store in PostgreSQL: the append-only log of item
upserts and retirements (``storage.catalogue``) that producers on many machines append to.

The SQLite log's guarantee carries over: when a reader sees head ``H``, every entry up to
``H`` is committed. PostgreSQL hands out ``BIGSERIAL`` numbers at insert, not at commit,
so two concurrent appends could commit out of order (a reader would see entry 6 without
5, and a version recording ``catalogue_seq = 6`` would miss 5 forever). Every append
therefore takes a transaction-level advisory lock first: appends run one after another,
and numbers are committed in order. Reads run in one ``REPEATABLE READ`` snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

import psycopg
from psycopg import sql

from storage.catalogue import (
    AppendResult,
    CatalogueChanges,
    EntryRow,
    ItemUpsert,
    Op,
    changes_from_rows,
    plan_append,
    upsert_rows,
)
from storage.manifest import utc_now_iso
from storage.pg_registry import PgTables

__all__ = ["PgCatalogueLog"]

log = logging.getLogger(__name__)


# Key of the advisory lock that serialises appends, with the schema's hash (one per store).
_APPEND_LOCK: Final = "towerflow:catalogue-append:"


class PgCatalogueLog(PgTables):
    """The catalogue in ``ref``'s database; the methods of ``storage.catalogue.CatalogueLog``.
    Reads of a database where nothing was appended see an empty log (head 0)."""

    _probe = "catalogue_events"

    def _append_tx(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A transaction that holds the store's append lock (appends commit in order)."""
        lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended({}, 0))")
        return self._transaction(lock.format(sql.Literal(_APPEND_LOCK + self.ref.schema)))

    # -- writing ---------------------------------------------------------------------------

    def append_upserts(self, event_id: str, items: Sequence[ItemUpsert]) -> AppendResult:
        """Record ``items`` (created or changed) under ``event_id``, atomically and durably."""
        return self._append(event_id, "upsert", upsert_rows(event_id, items))

    def append_retirements(self, event_id: str, item_ids: Sequence[int]) -> AppendResult:
        """Record that ``item_ids`` must no longer be served, atomically and durably."""
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
        with self._append_tx() as conn:
            seen = conn.execute(
                self._q("SELECT 1 FROM {s}.catalogue_events WHERE event_id = %s"), (event_id,)
            ).fetchone()
            if seen:
                log.info("event %s was already applied: no-op", event_id)
                return AppendResult(event_id, True, (), (), self._head(conn))
            ids = [r[0] for r in rows]
            # The latest entry of each item of the batch, in one query (O(batch)).
            latest = dict(
                (int(item), (o, d))
                for item, o, d in conn.execute(
                    self._q(
                        "SELECT DISTINCT ON (item_id) item_id, op, digest "
                        "FROM {s}.catalogue_entries WHERE item_id = ANY(%s) "
                        "ORDER BY item_id, seq DESC"
                    ),
                    (ids,),
                ).fetchall()
            )
            plan = plan_append(event_id, op, rows, latest, now)
            if plan.entries:
                with conn.cursor() as cur:
                    cur.executemany(
                        self._q(
                            "INSERT INTO {s}.catalogue_entries "
                            "(event_id, item_id, op, category, content, digest, ts) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        ),
                        plan.entries,
                    )
            head = self._head(conn)
            conn.execute(
                self._q(
                    "INSERT INTO {s}.catalogue_events "
                    "(event_id, op, received_at, n_items, n_changed, last_seq) "
                    "VALUES (%s, %s, %s, %s, %s, %s)"
                ),
                (event_id, op, now, len(rows), len(plan.changed), head),
            )
        return plan.result(head)

    # -- reading ---------------------------------------------------------------------------

    def _head(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(self._q("SELECT MAX(seq) FROM {s}.catalogue_entries")).fetchone()
        return int(row[0] or 0) if row is not None else 0

    def head(self) -> int:
        """Sequence number of the newest entry (0 for an empty log)."""
        return self._read(self._head) or 0

    def has_event(self, event_id: str) -> bool:
        """Whether ``event_id`` was applied (acknowledged)."""
        return self.event_seq(event_id) is not None

    def event_seq(self, event_id: str) -> int | None:
        """Log head right after ``event_id`` was appended, or None if it is not in the log."""
        row = self._read(
            lambda conn: conn.execute(
                self._q("SELECT last_seq FROM {s}.catalogue_events WHERE event_id = %s"),
                (event_id,),
            ).fetchone()
        )
        return None if row is None else int(row[0])

    def latest_event_at(self) -> str | None:
        """When the newest event was recorded (ISO-8601 UTC), or None for an empty log."""
        row = self._read(
            lambda conn: conn.execute(
                self._q("SELECT MAX(received_at) FROM {s}.catalogue_events")
            ).fetchone()
        )
        return None if row is None or row[0] is None else str(row[0])

    def changes(self, after: int, upto: int | None = None) -> CatalogueChanges:
        """Latest state (as of ``upto``, default the head) of items with entries in
        ``(after, upto]``. ``changes(0)`` is the whole catalogue."""

        def query(conn: psycopg.Connection[Any]) -> tuple[int, list[Any], list[Any]]:
            end = self._head(conn) if upto is None else upto
            rows = conn.execute(
                self._q(
                    "SELECT DISTINCT ON (item_id) item_id, op, category, content "
                    "FROM {s}.catalogue_entries WHERE seq > %s AND seq <= %s "
                    "ORDER BY item_id, seq DESC"
                ),
                (after, end),
            ).fetchall()
            events = conn.execute(
                self._q(
                    "SELECT event_id FROM {s}.catalogue_entries WHERE seq > %s AND seq <= %s "
                    "GROUP BY event_id ORDER BY MIN(seq)"
                ),
                (after, end),
            ).fetchall()
            return end, rows, events

        found = self._read(query)
        if found is None:
            return changes_from_rows(after, max(after, upto or 0), [], ())
        end, rows, events = found
        rows = [(int(r[0]), r[1], r[2], None if r[3] is None else bytes(r[3])) for r in rows]
        return changes_from_rows(after, end, rows, tuple(e[0] for e in events))
