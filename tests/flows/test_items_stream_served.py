"""End to end through a real Prefect server with `towerflow serve`'s default
(`--items-events stream`): its items consumer applies `towerflow add-items` events in
`new-items-batch` runs; the new-items deployment keeps no trigger; each event of a burst
is reported on its own; events sent while serve is down are applied when it restarts."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.live import BIN, LiveServer, live_prefect, served, wait_for
from cli.prefect_server import stop_process_group
from storage import Layout, VersionStore
from storage.backends import open_catalogue
from tests.conftest import Published
from tests.flows.test_new_items_served import _emit, _held, _pick_user_and_item

pytestmark = pytest.mark.prefect


class Live:
    def __init__(self, server: LiveServer, root: Path, work: Path) -> None:
        self.server, self.root, self.work = server, root, work
        self.proc: subprocess.Popen[bytes] | None = None


@pytest.fixture(scope="module")
def live(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("stream")
    root = work / "store"
    shutil.copytree(published.root, root)
    with live_prefect(work / "prefect-home", work / "server.log") as server:
        state = Live(server, root, work)
        with served(server, root, work / "serve.log") as proc:
            state.proc = proc
            yield state


def _cli(server: LiveServer, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(BIN / "towerflow"), *args], env=server.env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"towerflow {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _batch_reports(server: LiveServer) -> str:
    """Every `items-report` of the `new-items-batch` runs, joined."""
    runs = {r["id"] for r in server.runs_of_flow("new-items-batch")}
    return "\n".join(
        str(a["data"]) for a in server.artifacts("items-report") if a["flow_run_id"] in runs
    )


def _row(reports: str, event_id: str) -> list[str]:
    """The cells of each report row of `event_id`."""
    return [
        line
        for line in reports.splitlines()
        if line.startswith(f"| {event_id} |")  # ids here have no markdown to escape
    ]


def test_an_event_is_served_by_the_consumer_and_the_deployment_has_no_trigger(
    live: Live, tmp_path: Path
) -> None:
    user, new_item = _pick_user_and_item(live.root)
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps([new_item]))
    event_id = f"stream-{uuid.uuid4()}"
    sent = _cli(
        live.server, "add-items", str(items_file), "--root", str(live.root),
        "--event-id", event_id, "--wait", "60",
    )  # fmt: skip
    assert sent["version"] == VersionStore(Layout(live.root)).current()
    recs = _cli(
        live.server, "recommend", "--root", str(live.root), "--user-id", str(user), "--k", "10",
        "--json",
    )  # fmt: skip
    assert new_item["item_id"] in [r["item_id"] for r in recs["items"]], (recs, new_item)
    # Applied by the consumer: a batch run, no run of the deployment, whose automations
    # an earlier `serve --items-events trigger` would have left are gone.
    assert live.server.flow_runs("new-items") == []
    assert len(_row(_batch_reports(live.server), event_id)) == 1
    autos = live.server.post("/automations/filter", {})
    expects = {e for a in autos for e in a["trigger"].get("expect", [])}
    assert "towerflow.items.created" not in expects and "towerflow.chain.long" in expects


def test_each_event_of_a_burst_keeps_its_own_outcome(live: Live) -> None:
    store = VersionStore(Layout(live.root))
    held_before = set(_held(live.root))
    tag = uuid.uuid4().hex[:8]
    good = {"item_id": 7_000_001, "category": 0, "content": [0.5] * 8}
    bad = [{"item_id": 7_000_002, "category": 1}]
    _emit(live.server, "towerflow.items.created", {"event_id": f"{tag}-good", "items": [good]})
    _emit(live.server, "towerflow.items.created", {"event_id": f"{tag}-bad", "items": bad})
    _emit(live.server, "towerflow.items.created", {"event_id": f"{tag}-empty"})
    _emit(live.server, "towerflow.items.created", {"event_id": f"{tag}-good", "items": [good]})

    def reported() -> str | None:
        md = _batch_reports(live.server)
        return md if len(_row(md, f"{tag}-good")) == 2 and _row(md, f"{tag}-empty") else None

    md = wait_for("the burst's four outcomes", reported, 90)
    good_rows = _row(md, f"{tag}-good")
    assert {r.split(" | ")[2] for r in good_rows} == {"applied", "duplicate"}
    (bad_row,) = _row(md, f"{tag}-bad")
    assert bad_row.split(" | ")[2:8] == ["applied", "1", "0", "0", "0", "1"]
    (empty_row,) = _row(md, f"{tag}-empty")
    assert " | failed | " in empty_row and "exactly one" in empty_row
    rejected = [a for a in live.server.artifacts("items-rejected") if f"{tag}-bad" in str(a)]
    assert rejected, "the rejected item has its own artifact"
    catalogue = open_catalogue(Layout(live.root))
    assert catalogue.has_event(f"{tag}-good") and not catalogue.has_event(f"{tag}-empty")
    held = _held(live.root)
    assert held.count(7_000_001) == 1 and 7_000_002 not in held
    assert set(held) - held_before == {7_000_001} and store.current() is not None


def test_events_sent_while_serve_is_down_are_applied_when_it_restarts(live: Live) -> None:
    assert live.proc is not None
    stop_process_group(live.proc)
    event_id = f"down-{uuid.uuid4()}"
    item = {"item_id": 7_100_001, "category": 2, "content": [0.25] * 8}
    _emit(live.server, "towerflow.items.created", {"event_id": event_id, "items": [item]})
    catalogue = open_catalogue(Layout(live.root))
    assert not catalogue.has_event(event_id)
    with served(live.server, live.root, live.work / "serve-again.log") as proc:
        live.proc = proc
        wait_for("the event sent while down", lambda: 7_100_001 in _held(live.root), 90)
    assert catalogue.has_event(event_id)
