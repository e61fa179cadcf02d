"""Prometheus metrics of the recall service: per-route request counts and latencies,
measured by a pure ASGI middleware, and the served version, the watcher's counters and the
search queue, read from the service's state when ``GET /metrics`` is scraped.

Each app owns its ``CollectorRegistry`` (never the process-wide default), so several apps
in one process, as in the tests, keep separate counts. One process per registry: metrics
are not aggregated across uvicorn workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.state import RecallService

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS_S",
    "METRICS_PATH",
    "UNMATCHED",
    "MetricsMiddleware",
    "ServiceMetrics",
]

METRICS_PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# The route label of a request no route template matches: any path a client invents
# lands here, so hostile paths cannot grow the number of series.
UNMATCHED = "unmatched"
# Upper bounds in seconds, 0.5 ms .. 5 s: a recall takes ~1-5 ms over loopback, a queued
# one tens of ms, and anything past 5 s is an outage whatever its exact duration.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def _epoch_s(iso: str | None) -> float | None:
    """Seconds since the Unix epoch of an ISO-8601 time with an offset (None passes)."""
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


class _StateCollector:
    """Metrics derived from the service's state at scrape time, so the request path pays
    nothing for them and the version series can never go stale (a swap replaces it)."""

    def __init__(
        self, service: RecallService, limiter: Callable[[], anyio.CapacityLimiter | None]
    ) -> None:
        self._service = service
        self._limiter = limiter

    def collect(self) -> Iterable[Metric]:
        # Read once: recaller and status are each replaced whole by the watcher.
        recaller, status = self._service.recaller, self._service.status
        info = InfoMetricFamily(
            "towerflow_served_version", "The version answering requests (absent: none yet)."
        )
        items = GaugeMetricFamily(
            "towerflow_index_items", "Items the served version can return (its catalogue)."
        )
        created = GaugeMetricFamily(
            "towerflow_served_version_created_timestamp_seconds",
            "Unix time the served version was published (its manifest's created_at).",
        )
        loaded = GaugeMetricFamily(
            "towerflow_served_version_loaded_timestamp_seconds",
            "Unix time this process swapped the served version in.",
        )
        if recaller is not None:
            info.add_metric([], {"version": recaller.version_id})
            items.add_metric([], float(recaller.n_items))
            if recaller.manifest is not None:
                created.add_metric(
                    [], datetime.fromisoformat(recaller.manifest.created_at).timestamp()
                )
        loaded_s = _epoch_s(status.loaded_at)
        if loaded_s is not None:
            loaded.add_metric([], loaded_s)
        yield from (info, items, created, loaded)
        yield CounterMetricFamily(
            "towerflow_version_swaps",
            "Versions swapped in, the first one at start included (as /v1/health's swaps).",
            value=status.swaps,
        )
        yield CounterMetricFamily(
            "towerflow_deltas_applied",
            "Item deltas applied to the live index in place (no reload of the base).",
            value=status.deltas_applied,
        )
        yield CounterMetricFamily(
            "towerflow_version_rejections",
            "Published versions refused (checksums, sanity checks, load errors); "
            "/v1/health says why.",
            value=len(status.rejected),
        )
        yield CounterMetricFamily(
            "towerflow_version_polls", "Checks of the store's CURRENT.", value=status.polls
        )
        yield CounterMetricFamily(
            "towerflow_version_poll_errors",
            "Checks of CURRENT that failed (registry unreadable); the old version serves on.",
            value=status.poll_errors,
        )
        last_poll = GaugeMetricFamily(
            "towerflow_version_last_poll_timestamp_seconds",
            "Unix time of the last check of CURRENT (stale: the watcher is stuck).",
        )
        last_poll_s = _epoch_s(status.last_poll_at)
        if last_poll_s is not None:
            last_poll.add_metric([], last_poll_s)
        yield last_poll
        yield from self._queue()

    def _queue(self) -> Iterable[Metric]:
        # Called on the event loop (the /metrics handler is async), where the limiter lives.
        limiter = self._limiter()
        stats = limiter.statistics() if limiter is not None else None
        yield GaugeMetricFamily(
            "towerflow_recall_searches_waiting",
            "Recall searches queued for the concurrency limit.",
            value=stats.tasks_waiting if stats is not None else 0,
        )
        yield GaugeMetricFamily(
            "towerflow_recall_searches_running",
            "Recall searches running on the thread pool.",
            value=stats.borrowed_tokens if stats is not None else 0,
        )


class ServiceMetrics:
    """The app's registry: request metrics (fed by ``MetricsMiddleware``), the state
    collector, the search concurrency limit and the process's CPU, memory and files."""

    def __init__(
        self,
        service: RecallService,
        limiter: Callable[[], anyio.CapacityLimiter | None],
        recall_concurrency: int,
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "towerflow_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "towerflow_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "towerflow_http_requests_in_flight",
            "HTTP requests being answered (scrapes of /metrics excluded).",
            registry=self.registry,
        )
        limit = Gauge(
            "towerflow_recall_concurrency_limit",
            "Recall searches allowed to run at once.",
            registry=self.registry,
        )
        limit.set(recall_concurrency)
        self.registry.register(_StateCollector(service, limiter))
        ProcessCollector(registry=self.registry)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts, times and tracks in flight every HTTP request but scrapes of ``/metrics``.

    The route label is the template of the route that answered (``/v1/recall``), else of
    the first of ``routes`` whose path matches (a request refused before routing, e.g.
    413), else ``UNMATCHED``. Its cost per request: two clock reads, one gauge up and down,
    one counter and one histogram update (label children cached; the loop is one thread).
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = self.metrics.in_flight
        in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed_s = time.perf_counter() - started
            in_flight.dec()
            count, latency = self._child(self._route(scope), status)
            count.inc()
            latency.observe(elapsed_s)

    def _route(self, scope: Scope) -> str:
        # Routing left the matched route in the scope (405s included); Starlette's own
        # routes (/docs) and requests answered before routing have none.
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        for route in self.routes:
            if route.matches(scope)[0] is not Match.NONE:
                return str(getattr(route, "path", UNMATCHED))
        return UNMATCHED

    def _child(self, route: str, status: int) -> tuple[Counter, Histogram]:
        key = (route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.requests.labels(route, str(status)),
                self.metrics.latency.labels(route),
            )
        return children
