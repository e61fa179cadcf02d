"""The nightly flow on an imported MovieLens-format log with the per-user 8:1:1 protocol,
the behaviour-history feature, early stopping and EASE; then serving that version."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.movielens_like import MovieLensLikeConfig, import_config, write_movielens_like
from cli.app import app
from core.config import NightlyConfig
from core.recall import Recaller
from core.versionio import read_embeddings
from flows.nightly import nightly
from service import ApiSettings, RecallService, create_app
from storage import Layout, VersionFiles, VersionStore, read_json
from tests.service.conftest import serve

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def imported_run(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = tmp_path_factory.mktemp("ml")
    write_movielens_like(files, MovieLensLikeConfig(n_users=300, n_items=200, seed=3))
    root = tmp_path_factory.mktemp("store")
    cfg = NightlyConfig.model_validate(
        {
            "data": {
                "source": "import",
                "importing": import_config(files),
                "protocol": "random_ratio",
            },
            "tower": {"history_len": 8},
            "train": {"epochs": 4, "early_stopping_patience": 1, "uniform_negatives": 64},
            "evaluation": {"baseline": "ease", "gate_metric": "recall@10", "gate_min_lift": 0.0},
            "index": {"tune_queries": 50},
            "runtime": {"storage_root": str(root)},
        }
    )
    nightly(cfg)
    return root


def test_imported_version_reports_protocol_baseline_and_early_stopping(imported_run: Path) -> None:
    version = VersionStore(Layout(imported_run)).open_current(verify=True)
    metrics = read_json(version.file(VersionFiles.METRICS))
    assert metrics["protocol"] == "random_ratio"
    assert set(metrics["rankers"]) == {"model", "popularity", "ease"}  # no oracle on real data
    for ranker in metrics["rankers"].values():
        assert {"recall@10", "ndcg@10", "mrr@10", "precision@10", "coverage@10"} <= set(ranker)
    assert metrics["rankers"]["ease"]["recall@10"] > metrics["rankers"]["popularity"]["recall@10"]
    assert version.manifest.lineage.data_snapshot.startswith("movielens-like-")
    assert VersionFiles.RECENT in version.manifest.files


def test_history_model_serves_from_the_recent_items(imported_run: Path) -> None:
    recaller = Recaller.load(VersionStore(Layout(imported_run)))
    assert recaller.model.history_len == 8
    ragged = recaller.tables.recent
    assert ragged is not None and len(ragged) == len(recaller.tables.user_id)
    assert ragged.lengths().max() == 8  # the model's history_len, no more
    recent = ragged.dense(np.arange(len(ragged)), pad=0)
    user = int(recaller.tables.user_id[int(np.argmax((recent > 0).sum(axis=1)))])
    with_history = recaller.recall(user, k=10, exclude_seen=False)
    assert len(with_history.items) == 10
    # The same user's ID and profile without the history give another vector: the tower
    # really reads the recent items.
    pos = int(np.searchsorted(recaller.tables.user_id, user))
    row = torch.tensor([int(recaller.tables.user_id_row[pos])])
    prof = torch.from_numpy(recaller.tables.profile[pos : pos + 1])
    served = recaller.model.forward_user(row, prof, torch.from_numpy(recent[pos : pos + 1]))
    blank = recaller.model.forward_user(row, prof, torch.zeros_like(torch.from_numpy(recent[:1])))
    assert not torch.allclose(served, blank)
    # What the service answered is the exact top-10 for the history-aware vector.
    item_ids, item_vecs = read_embeddings(VersionStore(Layout(imported_run)).open_current().path)
    expected = item_ids[np.argsort(-(item_vecs @ served.detach().numpy()[0]), kind="stable")[:10]]
    np.testing.assert_array_equal(with_history.item_ids, expected)


def test_string_ids_come_back_raw_from_recommend(
    prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A log whose IDs are strings: stored as dense ints, spoken as the raw strings."""
    files = tmp_path_factory.mktemp("strings")
    ml = write_movielens_like(files, MovieLensLikeConfig(n_users=150, n_items=120, seed=5))
    lines = ml.ratings.read_text(encoding="latin-1").splitlines()
    rows = [line.split("::") for line in lines]
    log = files / "log.tsv"
    log.write_text(
        "user\titem\tts\n" + "".join(f"u-{u}\tsku-{i}\t{t}\n" for u, i, _, t in rows),
        encoding="utf-8",
    )
    root = tmp_path_factory.mktemp("store-strings")
    importing = {
        "name": "strings",
        "interactions": {
            "path": str(log),
            "user_col": "user",
            "item_col": "item",
            "time_col": "ts",
        },
    }
    nightly(
        NightlyConfig.model_validate(
            {
                "data": {"source": "import", "importing": importing, "protocol": "leave_one_out"},
                "train": {"epochs": 2},
                "evaluation": {"baseline": "itemknn", "gate_min_lift": -1.0},
                "index": {"tune_queries": 20},
                "runtime": {"storage_root": str(root)},
            }
        )
    )
    user = rows[0][0]
    args = ["recommend", "--user-id", f"u-{user}", "--k", "5", "--include-seen"]
    out = CliRunner().invoke(app, [*args, "--root", str(root), "--json"])
    assert out.exit_code == 0, out.output
    items = [r["raw_item_id"] for r in json.loads(out.output)["items"]]
    assert len(items) == 5 and all(i.startswith("sku-") for i in items)
    missing = CliRunner().invoke(app, ["recommend", "--user-id", "nobody", "--root", str(root)])
    assert missing.exit_code != 0 and "nobody" in missing.output

    # The HTTP API speaks them too: user_key in, raw_item_id out.
    service = RecallService(VersionStore(Layout(root)))
    assert service.refresh()
    with serve(create_app(service, ApiSettings())) as url:
        body = {"user_key": f"u-{user}", "k": 5, "exclude_seen": False}
        answer = httpx.post(f"{url}/v1/recall", json=body, timeout=30).json()
        assert [i["raw_item_id"] for i in answer["items"]] == items
        unknown = httpx.post(f"{url}/v1/recall", json={"user_key": "nobody"}, timeout=30)
        assert unknown.status_code == 404 and "nobody" in unknown.text
