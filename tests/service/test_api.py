"""The recall API over real HTTP (uvicorn on 127.0.0.1): answers equal the in-process
recall, every bad input is a 4xx with a JSON reason, and no version means 503."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.recall import Recaller
from service import ApiSettings, RecallService, create_app
from service.schemas import RecallResponse
from storage import Layout, VersionStore
from tests.conftest import Published
from tests.service.conftest import serve


@pytest.fixture(scope="module")
def client(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def recaller(live_service: RecallService) -> Recaller:
    r = live_service.recaller
    assert r is not None
    return r


REQUESTS: list[dict[str, Any]] = [
    {"k": 10},
    {"k": 25, "exclude_seen": False},
    {"k": 15, "include_categories": [1, 2]},
    {"k": 15, "exclude_categories": [0, 3], "exclude_seen": True},
    {"k": 5, "profile": [0.5, -1.0, 0.25, 2.0]},
]


@pytest.mark.prefect
@pytest.mark.parametrize("extra", REQUESTS, ids=lambda r: ",".join(r))
def test_http_answers_equal_the_in_process_recall(
    client: httpx.Client, recaller: Recaller, extra: dict[str, Any]
) -> None:
    for user in recaller.tables.user_id[::50].tolist():
        response = client.post("/v1/recall", json={"user_id": user, **extra})
        assert response.status_code == 200, response.text
        body = response.json()
        local = recaller.recall(
            user,
            extra.get("profile"),
            extra["k"],
            exclude_seen=extra.get("exclude_seen", True),
            include_categories=extra.get("include_categories"),
            exclude_categories=extra.get("exclude_categories"),
        )
        RecallResponse.model_validate(body)  # the documented shape
        assert body["version"] == local.version_id
        assert body["known_user"] is True
        assert body["items"] == [
            {"item_id": r.item_id, "score": r.score, "category": r.category} for r in local.items
        ]


@pytest.mark.prefect
def test_anonymous_profile_request(client: httpx.Client, recaller: Recaller) -> None:
    profile = [0.1, 0.2, -0.3, 0.4]
    body = client.post("/v1/recall", json={"profile": profile, "k": 7}).json()
    local = recaller.recall(None, profile, 7)
    assert body["known_user"] is False and body["user_id"] is None
    assert [x["item_id"] for x in body["items"]] == [r.item_id for r in local.items]
    unknown = client.post("/v1/recall", json={"user_id": 10**15, "profile": profile, "k": 7})
    assert unknown.status_code == 200 and unknown.json()["items"] == body["items"]


@pytest.mark.prefect
def test_health_and_version(client: httpx.Client, published: Published) -> None:
    health = client.get("/v1/health")
    assert health.status_code == 200
    h = health.json()
    assert h["status"] == "ok" and h["version"] == published.version_id
    assert h["current_in_store"] == published.version_id and h["last_rejection"] is None
    v = client.get("/v1/version").json()
    assert v["version"] == published.version_id
    assert v["catalogue_seq"] == 0  # a nightly of a store whose catalogue is empty
    assert (v["item_count"], v["user_count"], v["embedding_dim"], v["profile_dim"]) == (
        600,
        400,
        64,
        4,
    )
    schema = client.get("/openapi.json").json()
    assert {"/v1/recall", "/v1/health", "/v1/version"} <= set(schema["paths"])
    assert "/v1/items" not in schema["paths"]


@pytest.mark.prefect
def test_user_key_of_integer_ids_is_the_user_id(client: httpx.Client, recaller: Recaller) -> None:
    user = int(recaller.tables.user_id[0])
    by_key = client.post("/v1/recall", json={"user_key": str(user), "k": 5})
    by_id = client.post("/v1/recall", json={"user_id": user, "k": 5})
    assert by_key.status_code == 200, by_key.text
    assert by_key.json() == by_id.json() and by_key.json()["user_id"] == user
    assert recaller.stored_user_id(str(user)) == user


BAD: list[tuple[str, Any, int, str]] = [
    ("k zero", {"user_id": 1, "k": 0}, 422, "greater than or equal to 1"),
    ("k over max", {"user_id": 1, "k": 1001}, 422, "less than or equal to 1000"),
    ("k over catalogue", {"user_id": 1, "k": 601}, 400, "catalogue size"),
    ("k float", {"user_id": 1, "k": 2.5}, 422, "valid integer"),
    ("k string", {"user_id": 1, "k": "5"}, 422, "valid integer"),
    ("user string", {"user_id": "1"}, 422, "valid integer"),
    ("user bool", {"user_id": True}, 422, "valid integer"),
    ("user too big", {"user_id": 2**70}, 422, "less than or equal to"),
    ("unknown user", {"user_id": 987654321}, 404, "not in version"),
    ("unknown user key", {"user_key": "987654321"}, 404, "user 987654321 is not in version"),
    ("text user key", {"user_key": "u-1"}, 404, "(its user IDs are integers)"),
    ("nobody", {"k": 3}, 422, "user_id, a profile"),
    ("short profile", {"profile": [1.0, 2.0]}, 400, "must have 4 values"),
    ("long profile", {"user_id": 1, "profile": [0.0] * 5}, 400, "must have 4 values"),
    ("profile strings", {"profile": ["a", "b", "c", "d"]}, 422, "valid number"),
    ("profile nested", {"profile": [[1.0]] * 4}, 422, "valid number"),
    ("profile huge", {"profile": [1e300] * 4}, 400, "finite"),
    ("profile overflow", {"profile": [3e38] * 4}, 400, "out of range"),
    ("extra field", {"user_id": 1, "bogus": 1}, 422, "Extra inputs"),
    ("empty include", {"user_id": 1, "include_categories": []}, 422, "at least 1"),
    ("category string", {"user_id": 1, "exclude_categories": ["x"]}, 422, "valid integer"),
    ("exclude_seen string", {"user_id": 1, "exclude_seen": "yes"}, 422, "valid boolean"),
    ("not an object", [1, 2, 3], 422, "dictionary"),
    ("null body", None, 422, "Field required"),
]


@pytest.mark.prefect
@pytest.mark.parametrize(
    ("body", "status", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_json_is_a_4xx_with_a_reason(
    client: httpx.Client, body: Any, status: int, reason: str
) -> None:
    response = client.post("/v1/recall", json=body)
    assert response.status_code == status, response.text
    assert reason in response.text


RAW: list[tuple[str, bytes, dict[str, str], int]] = [
    ("NaN literal", b'{"profile": [NaN, 1, 2, 3]}', {}, 422),
    ("Infinity literal", b'{"user_id": 1, "profile": [Infinity, 1, 2, 3]}', {}, 422),
    ("1e999", b'{"profile": [1e999, 1, 2, 3]}', {}, 422),
    ("truncated", b'{"user_id": 1', {}, 422),
    ("not json", b"user_id=1", {"content-type": "application/x-www-form-urlencoded"}, 422),
    ("empty", b"", {}, 422),
    ("huge int", b'{"user_id": ' + b"9" * 5000 + b"}", {}, 400),
]


@pytest.mark.prefect
@pytest.mark.parametrize(
    ("content", "headers", "status"), [r[1:] for r in RAW], ids=[r[0] for r in RAW]
)
def test_malformed_bodies_are_a_4xx_with_json(
    client: httpx.Client, content: bytes, headers: dict[str, str], status: int
) -> None:
    h = {"content-type": "application/json", **headers}
    response = client.post("/v1/recall", content=content, headers=h)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


@pytest.mark.prefect
def test_oversized_bodies_get_413_with_or_without_content_length(client: httpx.Client) -> None:
    big = b'{"user_id": 1, "k": 5, "pad": "' + b"x" * 10_000 + b'"}'
    declared = client.post("/v1/recall", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "8192 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    streamed = client.post(
        "/v1/recall", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    # The server keeps answering afterwards.
    assert client.post("/v1/recall", json={"user_id": 1, "k": 3}).status_code == 200


@pytest.mark.prefect
def test_recall_on_the_event_loop_answers_the_same(
    published: Published, client: httpx.Client
) -> None:
    service = RecallService(VersionStore(Layout(published.root)))
    settings = ApiSettings(recall_on_event_loop=True)
    body = {"user_id": 7, "k": 12, "exclude_categories": [1]}
    with serve(create_app(service, settings)) as url:
        inline = httpx.post(f"{url}/v1/recall", json=body)
    assert inline.status_code == 200
    assert inline.json() == client.post("/v1/recall", json=body).json()


def test_no_published_version_means_503_with_a_reason(tmp_path: Path) -> None:
    service = RecallService(VersionStore(Layout(tmp_path / "empty")), poll_interval_s=0.05)
    with serve(create_app(service)) as url, httpx.Client(base_url=url) as c:
        health = c.get("/v1/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        assert "no published version" in health.json()["reason"]
        recall = c.post("/v1/recall", json={"user_id": 1})
        assert recall.status_code == 503 and "no published version" in recall.json()["detail"]
        assert c.get("/v1/version").status_code == 503
        # Bad input is still a 4xx, not a 503.
        assert c.post("/v1/recall", json={"k": "x"}).status_code == 422


@pytest.mark.prefect
@pytest.mark.parametrize("limit", [1, 3])
def test_at_most_recall_concurrency_searches_run_at_once(
    published: Published, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """8 requests at once: never more than ``limit`` searches overlap, and all answer."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    running, peak, lock = 0, 0, threading.Lock()
    real = Recaller.recall

    def slow(self: Recaller, *args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.1)  # long enough for every request to be waiting
            return real(self, *args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(Recaller, "recall", slow)
    service = RecallService(VersionStore(Layout(published.root)))
    settings = ApiSettings(recall_concurrency=limit)
    with (
        serve(create_app(service, settings)) as url,
        httpx.Client(base_url=url) as c,
        ThreadPoolExecutor(8) as pool,
    ):
        codes = list(
            pool.map(
                lambda u: c.post("/v1/recall", json={"user_id": u, "k": 3}).status_code,
                range(1, 9),
            )
        )
    assert codes == [200] * 8
    assert peak == limit


def test_recall_concurrency_defaults_to_the_cpu_budget(tmp_path: Path) -> None:
    from core.cpus import cpu_budget

    service = RecallService(VersionStore(Layout(tmp_path / "empty")))
    assert create_app(service).state.recall_concurrency == cpu_budget().count
    with pytest.raises(ValueError, match="recall_concurrency"):
        ApiSettings(recall_concurrency=0)


@pytest.mark.prefect
def test_recommend_json_and_the_api_answer_the_same_for_100_users(
    published: Published, client: httpx.Client
) -> None:
    """One recall path: the CLI's answer is the API's body, defaults included (seen items
    excluded), for 100 users, and with filters and a live profile."""
    from typer.testing import CliRunner

    from cli.app import app

    runner = CliRunner()
    root = ["--root", str(published.root), "--json"]
    users = list(range(1, 101))
    for user in users:
        cli = runner.invoke(app, ["recommend", "--user-id", str(user), "--k", "20", *root])
        assert cli.exit_code == 0, cli.output
        api = client.post("/v1/recall", json={"user_id": user, "k": 20})
        assert api.status_code == 200
        assert json.loads(cli.stdout) == api.json(), user
    args = ["--user-id", "7", "--k", "12", "--exclude-category", "1", "--include-seen"]
    body = {"user_id": 7, "k": 12, "exclude_categories": [1], "exclude_seen": False}
    cli = runner.invoke(app, ["recommend", *args, *root])
    assert json.loads(cli.stdout) == client.post("/v1/recall", json=body).json()
    args = ["--profile", "0.5,-1,0.25,2", "--k", "5", "--include-category", "2"]
    body = {"profile": [0.5, -1.0, 0.25, 2.0], "k": 5, "include_categories": [2]}
    cli = runner.invoke(app, ["recommend", *args, *root])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == client.post("/v1/recall", json=body).json()


@pytest.mark.prefect
def test_recommend_refuses_a_k_it_cannot_honour(published: Published) -> None:
    """Never a silent cap: above the API's limit is a usage error before anything loads,
    above the catalogue an error naming its size."""
    from typer.testing import CliRunner

    from cli import recommend
    from cli.app import app
    from core.recall_answer import MAX_K

    assert recommend._MAX_K == MAX_K
    runner = CliRunner()
    root = ["--root", str(published.root)]
    over = runner.invoke(app, ["recommend", "--user-id", "1", "--k", str(MAX_K + 1), *root])
    assert over.exit_code == 2 and "1000" in over.output
    n_items = Recaller.load(VersionStore(Layout(published.root))).n_items
    if n_items < MAX_K:
        big = runner.invoke(app, ["recommend", "--user-id", "1", "--k", str(n_items + 1), *root])
        assert big.exit_code == 2 and f"1..{n_items}" in big.output
    bad = runner.invoke(app, ["recommend", "--profile", "1,x", *root])
    assert bad.exit_code == 2 and "--profile" in bad.output
