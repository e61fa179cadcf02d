"""``GET /metrics`` over real HTTP: requests counted by route template and status, exactly;
hostile paths add no series; latency counts match; in-flight and queued searches go back
to 0; the served version, swaps, rejections and index size follow the store; off, it is
404 and no middleware runs. Each test builds its own app (and registry) over a copy of the
session's store, so counts start at zero."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.recall import Recaller
from service import ApiSettings, RecallService, create_app
from service.metrics import UNMATCHED, MetricsMiddleware
from storage import Layout, VersionStore
from tests.conftest import Published
from tests.service.conftest import serve
from tests.service.versions import publish_variant

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ROUTES = {"/v1/recall", "/v1/health", "/v1/version", "/openapi.json", "/docs", UNMATCHED}
HOSTILE = [
    "/etc/passwd",
    "/v1/recall/../../etc/passwd",
    "/v1/../../../admin",
    "/%00%ff",
    "/v2/recall",
    "/v1/recallx",
    "/v1/recall/1",
    *(f"/wp-admin/{i}/{'x' * i}" for i in range(1, 20)),
]


def scrape(c: httpx.Client) -> Samples:
    """Every sample of ``/metrics``, by sample name and labels."""
    response = c.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(k)[label] for (n, k) in samples if n == name}


def requests(samples: Samples) -> dict[tuple[str, str], float]:
    """``towerflow_http_requests_total`` as {(route, status): count}."""
    return {
        (dict(k)["route"], dict(k)["status"]): v
        for (n, k), v in samples.items()
        if n == "towerflow_http_requests_total"
    }


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def store(published: Published, tmp_path: Path) -> VersionStore:
    """A private copy of the session's store, free to publish into."""
    root = tmp_path / "store"
    shutil.copytree(published.root, root)
    return VersionStore(Layout(root), keep_versions=50)


@pytest.fixture
def client(store: VersionStore) -> Iterator[httpx.Client]:
    """A fresh app (metrics on, the default) over ``store``."""
    service = RecallService(store, poll_interval_s=3600)
    with (
        serve(create_app(service, ApiSettings(max_body_bytes=4096))) as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        yield c


@pytest.mark.prefect
def test_requests_are_counted_by_route_template_and_status(client: httpx.Client) -> None:
    before = scrape(client)
    assert requests(before) == {}  # scrapes themselves are not counted
    assert value(before, "towerflow_http_requests_in_flight") == 0
    sent: dict[tuple[str, str], int] = {}

    def send(route: str, status: int, response: httpx.Response) -> None:
        assert response.status_code == status, response.text
        sent[route, str(status)] = sent.get((route, str(status)), 0) + 1

    for user in range(1, 8):
        send("/v1/recall", 200, client.post("/v1/recall", json={"user_id": user, "k": 5}))
    for user in (10**9, 10**9 + 1, 10**9 + 2):
        send("/v1/recall", 404, client.post("/v1/recall", json={"user_id": user}))
    for bad in ({"k": "five", "user_id": 1}, {"k": 0, "user_id": 1}):
        send("/v1/recall", 422, client.post("/v1/recall", json=bad))
    # Refused before routing: still the route it was sent to.
    send("/v1/recall", 413, client.post("/v1/recall", json={"user_id": 1, "pad": "x" * 5000}))
    send("/v1/recall", 405, client.get("/v1/recall"))
    send("/v1/version", 200, client.get("/v1/version"))
    send("/v1/health", 200, client.get("/v1/health"))
    for path in HOSTILE:
        send(UNMATCHED, 404, client.get(path))
        send(UNMATCHED, 404, client.post(path, json={}))

    after = scrape(client)
    assert requests(after) == sent
    assert label_values(after, "towerflow_http_requests_total", "route") <= ROUTES
    assert sent[UNMATCHED, "404"] == 2 * len(HOSTILE)
    for route in {r for r, _ in sent}:
        total = sum(n for (r, _), n in sent.items() if r == route)
        count = "towerflow_http_request_duration_seconds_count"
        assert value(after, count, route=route) == total
        bucket = "towerflow_http_request_duration_seconds_bucket"
        assert value(after, bucket, route=route, le="+Inf") == total
        assert (value(after, "towerflow_http_request_duration_seconds_sum", route=route) or 0) > 0
    buckets = label_values(after, "towerflow_http_request_duration_seconds_bucket", "le")
    assert {"0.0005", "5.0", "+Inf"} <= buckets
    assert value(after, "towerflow_http_requests_in_flight") == 0


@pytest.mark.prefect
def test_in_flight_and_queued_searches_while_recall_is_blocked(
    store: VersionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_recall = Recaller.recall

    def blocked_recall(self: Recaller, *args: Any, **kwargs: Any) -> Any:
        assert release.wait(30), "never released"
        return real_recall(self, *args, **kwargs)

    service = RecallService(store, poll_interval_s=3600)
    app = create_app(service, ApiSettings(recall_concurrency=1))
    statuses: list[int] = []
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        scrape(c)  # the service has loaded its version (lifespan) before recall is blocked
        monkeypatch.setattr(Recaller, "recall", blocked_recall)

        def post(user: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as own:
                statuses.append(own.post("/v1/recall", json={"user_id": user}).status_code)

        threads = [threading.Thread(target=post, args=(u,)) for u in (1, 2, 3)]
        for t in threads:
            t.start()

        def blocked() -> bool:
            s = scrape(c)
            return value(s, "towerflow_recall_searches_waiting") == 2

        try:
            _wait_for(blocked, "two searches queued behind one")
            during = scrape(c)
        finally:
            release.set()
            for t in threads:
                t.join(30)
        after = scrape(c)
    assert statuses == [200, 200, 200]
    assert value(during, "towerflow_http_requests_in_flight") == 3
    assert value(during, "towerflow_recall_searches_running") == 1
    assert value(during, "towerflow_recall_concurrency_limit") == 1
    assert requests(during) == {}  # none has finished
    assert value(after, "towerflow_http_requests_in_flight") == 0
    assert value(after, "towerflow_recall_searches_waiting") == 0
    assert value(after, "towerflow_recall_searches_running") == 0
    assert requests(after) == {("/v1/recall", "200"): 3}


@pytest.mark.prefect
def test_served_version_and_index_size_match_v1_version(
    client: httpx.Client, published: Published
) -> None:
    version = client.get("/v1/version").json()
    s = scrape(client)
    assert label_values(s, "towerflow_served_version_info", "version") == {version["version"]}
    assert version["version"] == published.version_id
    assert value(s, "towerflow_index_items") == version["item_count"] == 600
    assert value(s, "towerflow_version_swaps_total") == 1  # the version loaded at start
    assert value(s, "towerflow_version_rejections_total") == 0
    assert value(s, "towerflow_version_poll_errors_total") == 0
    assert (value(s, "towerflow_version_polls_total") or 0) >= 1
    loaded = value(s, "towerflow_served_version_loaded_timestamp_seconds")
    assert loaded is not None and abs(loaded - time.time()) < 300
    assert (value(s, "process_resident_memory_bytes") or 0) > 0


@pytest.mark.prefect
def test_hot_swaps_and_rejections_move_the_version_series(
    store: VersionStore, published: Published
) -> None:
    base = store.layout.version_dir(published.version_id)
    service = RecallService(store, poll_interval_s=0.05)

    def versions(s: Samples) -> set[str]:
        return label_values(s, "towerflow_served_version_info", "version")

    def rejections(s: Samples) -> float | None:
        return value(s, "towerflow_version_rejections_total")

    with serve(create_app(service)) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert versions(scrape(c)) == {published.version_id}
        new = publish_variant(store, base, "ok", 1)
        _wait_for(lambda: versions(scrape(c)) == {new}, f"{new} served")
        swapped = scrape(c)
        # One at a time: the watcher would skip a version replaced before its next poll.
        damaged = publish_variant(store, base, "checksum", 2)  # a flipped byte in the index
        _wait_for(lambda: rejections(scrape(c)) == 1, f"{damaged} rejected")
        short = publish_variant(store, base, "count", 3)  # 10 items missing from the index
        _wait_for(lambda: rejections(scrape(c)) == 2, f"{short} rejected")
        rejected = scrape(c)
        answer = c.post("/v1/recall", json={"user_id": 1}).json()
    assert value(swapped, "towerflow_version_swaps_total") == 2
    assert value(swapped, "towerflow_version_rejections_total") == 0
    # Refused versions are never served: the series stays on the last good one.
    assert versions(rejected) == {new} == {answer["version"]}
    assert value(rejected, "towerflow_version_swaps_total") == 2
    assert [r.version_id for r in service.status.rejected] == [damaged, short]
    assert value(rejected, "towerflow_index_items") == 600


@pytest.mark.prefect
def test_a_damaged_first_version_serves_nothing_and_is_counted(
    store: VersionStore, published: Published
) -> None:
    publish_variant(store, store.layout.version_dir(published.version_id), "checksum", 0)
    service = RecallService(store, poll_interval_s=3600)
    with serve(create_app(service)) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.post("/v1/recall", json={"user_id": 1}).status_code == 503
        s = scrape(c)
    assert value(s, "towerflow_version_rejections_total") == 1
    assert value(s, "towerflow_version_swaps_total") == 0
    assert label_values(s, "towerflow_served_version_info", "version") == set()
    assert value(s, "towerflow_index_items") is None
    assert requests(s) == {("/v1/recall", "503"): 1}


@pytest.mark.prefect
def test_metrics_off_is_a_404_and_adds_no_middleware(published: Published) -> None:
    service = RecallService(VersionStore(Layout(published.root)), poll_interval_s=3600)
    app = create_app(service, ApiSettings(metrics=False))
    assert all(m.cls is not MetricsMiddleware for m in app.user_middleware)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/metrics").status_code == 404
        assert c.post("/v1/recall", json={"user_id": 1, "k": 3}).status_code == 200
    on = create_app(RecallService(VersionStore(Layout(published.root))))
    assert any(m.cls is MetricsMiddleware for m in on.user_middleware)


def test_the_setting_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ApiSettings().metrics is True
    monkeypatch.setenv("TOWERFLOW_API_METRICS", "false")
    assert ApiSettings().metrics is False


def test_unreadable_registry_polls_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = VersionStore(Layout(tmp_path / "store"))

    def unreadable() -> str | None:
        raise OSError("registry unreadable")

    monkeypatch.setattr(store, "current", unreadable)
    service = RecallService(store, poll_interval_s=3600)
    with serve(create_app(service)) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert service.refresh() is False  # a second failed poll, after the one at start
        s = scrape(c)
    assert value(s, "towerflow_version_polls_total") == 2
    assert value(s, "towerflow_version_poll_errors_total") == 2
    last_poll = value(s, "towerflow_version_last_poll_timestamp_seconds")
    assert last_poll is not None and abs(last_poll - time.time()) < 300
    assert value(s, "towerflow_version_swaps_total") == 0
