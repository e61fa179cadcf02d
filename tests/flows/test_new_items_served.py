"""End to end through a real Prefect server: `towerflow serve --items-events trigger` runs
the new-items deployment on its event trigger (as `prefect deploy` + a worker would; the
default, a consumer in serve's process, is tests/flows/test_items_stream_served.py);
`towerflow add-items` sends the event; the new item is
recommended to a user who likes its category. A redelivered event changes nothing; a
malformed one is rejected with its reasons and leaves the index as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.live import BIN, LiveServer, live_prefect, served, wait_for
from core.filtering import index_ids
from core.recall import Recaller
from core.versionio import embed_served_users
from model.embed import embed_items
from model.features import category_rows
from storage import Layout, VersionStore
from tests.conftest import Published

pytestmark = pytest.mark.prefect

Live = tuple[LiveServer, Path]


@pytest.fixture(scope="module")
def live(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A copy of the session's published store, served by a live server."""
    work = tmp_path_factory.mktemp("served")
    root = work / "store"
    shutil.copytree(published.root, root)
    with (
        live_prefect(work / "prefect-home", work / "server.log") as server,
        served(server, root, work / "serve.log", items_events="trigger"),
    ):
        yield server, root


def _cli(server: LiveServer, *args: str, timeout_s: float = 120) -> dict[str, Any]:
    proc = subprocess.run(
        [str(BIN / "towerflow"), *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"towerflow {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _emit(server: LiveServer, name: str, payload: dict[str, Any]) -> None:
    """Send a raw event with a fresh Prefect id (a producer's retry, or a bad producer)."""
    code = (
        "import json, sys, uuid\n"
        "from prefect.events import emit_event\n"
        "from prefect.events.worker import EventsWorker\n"
        "emit_event(sys.argv[1], resource={'prefect.resource.id': 'towerflow.items.test'},"
        " payload=json.loads(sys.argv[2]), id=uuid.uuid4())\n"
        "EventsWorker.drain_all(timeout=30)\n"
    )
    subprocess.run(
        [str(BIN / "python"), "-c", code, name, json.dumps(payload)],
        env=server.env,
        check=True,
        timeout=60,
    )


def _finished_runs(server: LiveServer, event_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in server.flow_runs("new-items")
        if r["parameters"].get("event_id") == event_id
        and r["state_type"] in {"COMPLETED", "FAILED", "CRASHED"}
    ]


def _report(server: LiveServer, run: dict[str, Any]) -> str:
    """The `items-report` markdown of one flow run."""
    (artifact,) = [a for a in server.artifacts("items-report") if a["flow_run_id"] == run["id"]]
    return str(artifact["data"])


def _pick_user_and_item(root: Path) -> tuple[int, dict[str, Any]]:
    """A user whose most frequent category is c, and a new item of category c that the
    served model puts in that user's top 10: its content either the mean of c's items (a
    typical item of c) or the mean of the user's own items of c (one like those it
    clicks), whichever clears the user's 10th score by the most over all users. A new
    item has no trained ID row, so on a small world its margin is thin; the search over
    every user and both kinds keeps the pick from depending on one world's luck."""
    rec = Recaller.load(VersionStore(Layout(root)))
    t, model = rec.tables, rec.model
    n_cat = model.spec.n_categories
    typical = {c: t.content[t.category == c].mean(axis=0) for c in np.unique(t.category)}
    best: tuple[float, int, int, np.ndarray] | None = None
    for pos in range(len(t.user_id)):
        user = int(t.user_id[pos])
        rows = np.searchsorted(t.item_id, rec.history.items_of(user))
        cats = t.category[rows]
        if len(cats) == 0:
            continue
        c = int(np.bincount(cats).argmax())
        user_vec = embed_served_users(model, t, np.array([pos]))[0]
        tenth = float(rec.recall(user, k=10, exclude_seen=False).scores[-1])
        for content in (typical[c], t.content[rows[cats == c]].mean(axis=0)):
            content = content.astype(np.float32)
            vec = embed_items(
                model, np.zeros(1, np.int64), category_rows([c], n_cat), content[None]
            )
            margin = float(user_vec @ vec[0]) - tenth
            if best is None or margin > best[0]:
                best = (margin, user, c, content)
    assert best is not None and best[0] > 0, (
        f"no user ranks a new item top 10: {best[:3] if best else None}"
    )
    _, user, c, content = best
    new_id = int(t.item_id.max()) + 1000
    return user, {"item_id": new_id, "category": c, "content": [float(v) for v in content]}


def _held(root: Path) -> list[int]:
    ids = index_ids(Recaller.load(VersionStore(Layout(root))).index)
    assert ids is not None
    return sorted(ids.tolist())


def test_event_makes_a_new_item_recommended_and_a_redelivery_changes_nothing(
    live: Live, tmp_path: Path
) -> None:
    server, root = live
    user, new_item = _pick_user_and_item(root)
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps([new_item]))
    event_id = str(uuid.uuid4())
    sent = _cli(
        server, "add-items", str(items_file), "--root", str(root), "--event-id", event_id,
        "--wait", "90",
    )  # fmt: skip
    assert sent["sent"] == "inline" and sent["version"] == VersionStore(Layout(root)).current()
    recs = _cli(
        server, "recommend", "--root", str(root), "--user-id", str(user), "--k", "10", "--json"
    )
    assert new_item["item_id"] in [r["item_id"] for r in recs["items"]], (recs, new_item)

    # The same event again, as a redelivery would bring it (a new Prefect event id).
    version = VersionStore(Layout(root)).current()
    _emit(server, "towerflow.items.created", {"event_id": event_id, "items": [new_item]})
    wait_for(f"the redelivered event {event_id}'s second run", lambda: len(
        _finished_runs(server, event_id)) >= 2, 90)  # fmt: skip
    runs = _finished_runs(server, event_id)
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    assert VersionStore(Layout(root)).current() == version
    assert _held(root).count(new_item["item_id"]) == 1
    # Each run is named after its event and reports what it did in `items-report`.
    assert {r["name"] for r in runs} == {f"new-items-create-{event_id}"}
    reports = [_report(server, r) for r in runs]
    assert sum("| inserted (new items) | 1 |" in md for md in reports) == 1
    assert sum("**Duplicate**" in md for md in reports) == 1


def test_malformed_payload_is_rejected_with_reasons_and_the_index_is_unchanged(
    live: Live,
) -> None:
    server, root = live
    store = VersionStore(Layout(root))
    version, held = store.current(), _held(root)
    event_id = f"bad-{uuid.uuid4()}"
    bad = [
        {"item_id": 5_000_001, "category": 1, "content": ["NaN"] * 8},
        {"item_id": 5_000_002, "category": 1},
        {"item_id": "x", "category": 1, "content": [0.0] * 8},
    ]
    _emit(server, "towerflow.items.created", {"event_id": event_id, "items": bad})
    (run,) = wait_for(f"the run of {event_id}", lambda: _finished_runs(server, event_id), 90)
    assert run["state_type"] == "COMPLETED"
    (artifact,) = [a for a in server.artifacts("items-rejected") if a["flow_run_id"] == run["id"]]
    rows = artifact["data"]
    rows = json.loads(rows) if isinstance(rows, str) else rows
    reasons = {row["position"]: row["reason"] for row in rows}
    assert "content[0] must be a number" in reasons[0]
    assert "missing field(s): content" in reasons[1]
    assert "item_id must be an integer" in reasons[2]
    assert store.current() == version and _held(root) == held
    md = _report(server, run)
    assert "| rejected | 3 |" in md and "| inserted (new items) | 0 |" in md
    assert "missing field(s): content" in md

    # A payload that names neither items nor a file: the run fails, saying why.
    _emit(server, "towerflow.items.created", {"event_id": "empty-payload"})
    (run,) = wait_for(
        "the empty payload's run", lambda: _finished_runs(server, "empty-payload"), 90
    )
    assert run["state_type"] == "FAILED" and "exactly one" in run["state"]["message"]
    assert store.current() == version


def test_a_long_chain_is_compacted_by_the_compact_deployment(live: Live) -> None:
    """`towerflow.chain.long` (what the new-items flow emits when CURRENT stacks
    runtime.max_delta_chain deltas) runs the compact-items deployment: CURRENT becomes one
    complete version serving the same items."""
    server, root = live
    store = VersionStore(Layout(root))
    if "delta" not in store.open_current().manifest.extra:  # run alone: make a chain
        before = store.current()
        rec = Recaller.load(store)
        new = {"item_id": int(rec.tables.item_id.max()) + 5000, "category": 0,
               "content": [float(v) for v in rec.tables.content[0]]}  # fmt: skip
        _emit(server, "towerflow.items.created", {"event_id": str(uuid.uuid4()), "items": [new]})
        wait_for("a delta", lambda: store.current() != before, 90)
    head = store.open_current()
    assert "delta" in head.manifest.extra
    held = _held(root)
    code = (
        "import json, sys, uuid\n"
        "from prefect.events import emit_event\n"
        "from prefect.events.worker import EventsWorker\n"
        "emit_event('towerflow.chain.long', resource={'prefect.resource.id':"
        " 'towerflow.store.' + sys.argv[2]}, payload={'root': sys.argv[1],"
        " 'version_id': sys.argv[2], 'depth': 1, 'min_depth': 1}, id=uuid.uuid4())\n"
        "EventsWorker.drain_all(timeout=30)\n"
    )
    subprocess.run(
        [str(BIN / "python"), "-c", code, str(root), head.version_id],
        env=server.env,
        check=True,
        timeout=60,
    )

    def compacted() -> bool:
        return any(r["state_type"] == "COMPLETED" for r in server.flow_runs("compact-items"))

    wait_for("the compact-items run", compacted, 120)
    current = store.open_current()
    assert current.version_id != head.version_id and "delta" not in current.manifest.extra
    assert current.manifest.lineage.parent_version == head.version_id
    assert _held(root) == held
