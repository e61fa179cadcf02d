"""The version a server answers from, and the background watcher that swaps it.

A request reads ``RecallService.recaller`` once and uses that immutable ``Recaller`` to
the end, so it finishes on the version it started with. The watcher loads and checks a
newly published version off the request path, then swaps it in with one assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from core.recall import Recaller
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
                recaller = Recaller.load(self.store, current)
            except Exception as e:  # any failure means "do not serve it", never a crash
                log.error("rejected version %s: %s", current, e)
                rejection = Rejection(current, f"{type(e).__name__}: {e}", _now())
                self._status = replace(status, rejected=(*status.rejected, rejection))
                return False
            # The swap: one reference assignment; requests that already read the old
            # Recaller finish on it. The status goes first: readers take the recaller,
            # then the status (the /metrics collector), so one that sees the new version
            # also sees its swap counted (the other order let a scrape fall in between).
            self._status = replace(status, loaded_at=_now(), swaps=status.swaps + 1)
            self._recaller = recaller
            log.info(
                "serving version %s (was %s), loaded in %.2f s",
                current,
                serving,
                time.perf_counter() - started,
            )
            return True

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
