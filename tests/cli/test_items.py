"""`towerflow add-items / retire-items / serve`: in-process runs, and clear errors when no
Prefect server is reachable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prefect.events import DeploymentEventTrigger
from typer.testing import CliRunner

from cli.app import app
from cli.deployments import deployments_from_yaml
from cli.items import prefect_event_id
from cli.options import PREFECT_DEFAULTS
from core.recall import Recaller
from storage import CatalogueLog
from tests.core.items.conftest import N_ITEMS, MakeStore, item
from tests.core.items.helpers import create, held_ids

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands set Prefect defaults in os.environ (as `towerflow run` does); undo
    them after each test so later tests' logging is unaffected."""
    for key in [*PREFECT_DEFAULTS, "TOWERFLOW_ROOT"]:
        # setenv records the prior value (or its absence) for teardown, delenv alone does not.
        monkeypatch.setenv(key, os.environ.get(key, ""))
        if not os.environ[key]:
            monkeypatch.delenv(key)


@pytest.mark.prefect
def test_add_and_retire_now_run_the_flow_in_process(
    prefect_harness: None, make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store("Flat")
    root = str(store.layout.root)
    items = tmp_path / "items.json"
    items.write_text(json.dumps([item(7001), item(7002), {"item_id": 7003}]))
    runner = CliRunner()
    result = runner.invoke(app, ["add-items", str(items), "--root", root, "--now"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["accepted"], out["rejected"], out["duplicate"]) == (2, 1, False)
    assert out["version_id"] == store.current()
    result = runner.invoke(
        app, ["retire-items", "7001", "10", "--root", root, "--now", "--event-id", "r-1"]
    )
    assert result.exit_code == 0, result.output
    ids = held_ids(Recaller.load(store)).tolist()
    assert 7002 in ids and 7001 not in ids and 10 not in ids and len(ids) == N_ITEMS
    assert CatalogueLog(store.layout.catalogue_db).has_event("r-1")


@pytest.mark.prefect
def test_a_large_file_now_goes_through_the_inbox(
    prefect_harness: None, make_store: MakeStore, tmp_path: Path
) -> None:
    """Over the inline limit, `--now` stages the file in the store's inbox (the only place
    the flow reads files from), as a sent event does."""
    store = make_store("Flat")
    root = str(store.layout.root)
    items = tmp_path / "many.json"
    items.write_text(json.dumps([item(8000 + i, seed=i) for i in range(501)]))
    result = CliRunner().invoke(
        app, ["add-items", str(items), "--root", root, "--now", "--event-id", "big-1"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["accepted"], out["rejected"]) == (501, 0)
    assert (store.layout.inbox_dir / "big-1.json").is_file()
    assert len(held_ids(Recaller.load(store))) == N_ITEMS + 501


def test_sending_without_a_server_fails_clearly(
    make_store: MakeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    items = tmp_path / "items.json"
    items.write_text(json.dumps([item(7001)]))
    root = str(make_store("Flat").layout.root)
    for args in (["add-items", str(items), "--root", root], ["serve", "--root", root]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 8 and "PREFECT_API_URL is not set" in result.output
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    result = CliRunner().invoke(app, ["retire-items", "1", "--root", root])
    assert result.exit_code == 8 and "no Prefect server answers" in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output


def test_serve_builds_the_deployments_of_prefect_yaml() -> None:
    nightly, new_items, compact = deployments_from_yaml(ROOT / "prefect.yaml")
    assert (nightly.name, new_items.name, compact.name) == ("nightly", "new-items", "compact-items")
    (trigger,) = compact.triggers
    assert isinstance(trigger, DeploymentEventTrigger)
    assert sorted(trigger.expect) == ["towerflow.chain.long"]
    assert compact.concurrency_limit == 1
    (schedule,) = nightly.schedules or []
    assert schedule.schedule.cron == "0 2 * * *"  # type: ignore[union-attr]
    triggers = [t for t in new_items.triggers if isinstance(t, DeploymentEventTrigger)]
    assert [sorted(t.expect) for t in triggers] == [
        ["towerflow.items.created"],
        ["towerflow.items.retired"],
    ]
    assert [(t.parameters or {})["operation"] for t in triggers] == ["create", "retire"]


def test_prefect_event_ids_are_stable_per_event() -> None:
    assert prefect_event_id("abc") == prefect_event_id("abc") != prefect_event_id("abd")
    uid = "5cf0aff6-2606-4d96-915c-223063dc2f9d"
    assert str(prefect_event_id(uid)) == uid


def test_compact_folds_the_chain_and_then_has_nothing_to_do(make_store: MakeStore) -> None:
    store = make_store("Flat")
    layout = store.layout
    for n in range(3):
        create(layout, f"e{n}", [item(7100 + n)])
    served = held_ids(Recaller.load(store)).tolist()
    runner = CliRunner()
    result = runner.invoke(app, ["compact", "--root", str(layout.root), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["compacted"] and out["folded"] == 3 and out["version_id"] == store.current()
    assert held_ids(Recaller.load(store)).tolist() == served
    listed = runner.invoke(app, ["versions", "--root", str(layout.root), "--json"])
    assert [v["kind"] for v in json.loads(listed.stdout)][:4] == ["items", *["delta"] * 3]
    again = runner.invoke(app, ["compact", "--root", str(layout.root)])
    assert again.exit_code == 0 and "nothing to compact" in again.output
