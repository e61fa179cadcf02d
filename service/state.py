"""The version a server answers from, and the background watcher that swaps it.

A request takes the serving ``Recaller`` once, under the read lock (``reading()``), and
searches with it, so it finishes on the version it started with. The watcher loads and
checks a newly published version off the request path and swaps it in with one
assignment; a delta on top of the serving version is applied to the live index in place
(``core.recall_advance``) under the write lock, without reloading the base.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from core.recall import Recaller
from core.recall_advance import Advance, plan_advance
from service.rwlock import ReadWriteLock
from storage import VersionStore

__all__ = ["RecallService", "Rejection", "ServiceStatus"]

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Rejection:
    """A published version that failed verification and is never served."""

    version_id: str
    reason: str
    at: str


@dataclass(frozen=True)
class ServiceStatus:
    """What ``/v1/health`` and ``/metrics`` report; replaced as a whole, so readers see
    one snapshot."""

    current_in_store: str | None = None
    loaded_at: str | None = None
    last_poll_at: str | None = None
    last_poll_error: str | None = None
    rejected: tuple[Rejection, ...] = ()
    swaps: int = 0
    polls: int = 0
    poll_errors: int = 0  # polls that could not read CURRENT (``/metrics`` counts them)
    deltas_applied: int = 0  # deltas applied to the live index in place (no reload)

    @property
    def last_rejection(self) -> Rejection | None:
        return self.rejected[-1] if self.rejected else None


@dataclass
class RecallService:
    """Serves one ``Recaller`` at a time and follows the store's CURRENT.

    ``refresh`` checks CURRENT once; ``start`` runs it now and then every
    ``poll_interval_s`` seconds on a daemon thread until ``stop``. A version that fails
    checksum or sanity checks is remembered and never loaded again (no retry storm).
    """

    store: VersionStore
    poll_interval_s: float = 0.5
    _recaller: Recaller | None = field(default=None, init=False)
    _status: ServiceStatus = field(default_factory=ServiceStatus, init=False)
    _refresh_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _rw: ReadWriteLock = field(default_factory=ReadWriteLock, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    @property
    def recaller(self) -> Recaller | None:
        """The version to answer with (None before the first good one); read it once."""
        return self._recaller

    @property
    def status(self) -> ServiceStatus:
        return self._status

    def refresh(self) -> bool:
        """Look at CURRENT once; load, check and swap in a new version. True if swapped.

        Never raises for a bad version or an unreadable registry: the reason goes to the
        status and the old version keeps serving.
        """
        with self._refresh_lock:
            status = self._status
            try:
                current = self.store.current()
            except Exception as e:  # sqlite errors, a vanished root: report, keep serving
                self._status = replace(
                    status,
                    last_poll_at=_now(),
                    last_poll_error=str(e),
                    polls=status.polls + 1,
                    poll_errors=status.poll_errors + 1,
                )
                log.warning("cannot read CURRENT: %s", e)
                return False
            status = replace(
                status,
                current_in_store=current,
                last_poll_at=_now(),
                last_poll_error=None,
                polls=status.polls + 1,
            )
            serving = self._recaller.version_id if self._recaller is not None else None
            rejected = {r.version_id for r in status.rejected}
            if current is None or current == serving or current in rejected:
                self._status = status
                return False
            started = time.perf_counter()
            try:
                advance = self._plan_advance(current)
                if advance is None:
                    recaller = Recaller.load(self.store, current)
            except Exception as e:  # any failure means "do not serve it", never a crash
                log.error("rejected version %s: %s", current, e)
                rejection = Rejection(current, f"{type(e).__name__}: {e}", _now())
                self._status = replace(status, rejected=(*status.rejected, rejection))
                return False
            if advance is not None:
                # In place: the shared index is edited while no search runs on it, and the
                # new version swaps in before the searches resume (see core.recall_advance).
                with self._rw.writing():
                    try:
                        recaller = advance.apply()
                    except Exception as e:  # the shared index is in doubt: reload whole
                        log.error("applying %s in place failed (%s): loading it whole", current, e)
                        self._recaller = None  # the old version shares that index
                        loaded = self._load_whole(current, status)
                        if loaded is None:
                            return False
                        recaller = loaded
                    self._swap(recaller, status, deltas=len(advance.edits))
            else:
                # Requests that already read the old Recaller finish on it (its own index).
                self._swap(recaller, status, deltas=0)
            log.info(
                "serving version %s (was %s), %s in %.3f s",
                current,
                serving,
                "applied in place" if advance is not None else "loaded",
                time.perf_counter() - started,
            )
            return True

    def _plan_advance(self, current: str) -> Advance | None:
        """The in-place move of the serving version to ``current``, or None (load whole)."""
        if self._recaller is None:
            return None
        head = self.store.open_version(current, verify=False)
        return plan_advance(self.store, self._recaller, head)

    def _load_whole(self, current: str, status: ServiceStatus) -> Recaller | None:
        try:
            return Recaller.load(self.store, current)
        except Exception as e:
            log.error("rejected version %s: %s", current, e)
            rejection = Rejection(current, f"{type(e).__name__}: {e}", _now())
            self._status = replace(status, rejected=(*status.rejected, rejection))
            return None

    def _swap(self, recaller: Recaller, status: ServiceStatus, deltas: int) -> None:
        # One reference assignment. The status goes first: readers take the recaller, then
        # the status (the /metrics collector), so one that sees the new version also sees
        # its swap counted (the other order let a scrape fall in between).
        self._status = replace(
            status,
            loaded_at=_now(),
            swaps=status.swaps + 1,
            deltas_applied=status.deltas_applied + deltas,
        )
        self._recaller = recaller

    @contextmanager
    def reading(self) -> Iterator[Recaller | None]:
        """The serving version for one search: read under the read lock, so an in-place
        edit of its index waits for the search and the search never sees half of one."""
        with self._rw.reading():
            yield self._recaller

    def start(self) -> None:
        """Refresh now (so a server starts with a version when there is one), then keep
        polling on a background thread."""
        if self._thread is not None:
            return
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="version-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the watcher; a load in progress finishes first (up to ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self.refresh()
