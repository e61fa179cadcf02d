"""The linear tower, alone and in a hybrid, through the whole life cycle, without
Prefect: a nightly publishes it (closed-form fit, unnormalised vectors in the index), the
recall path serves known and unknown users, and an items event embeds a new item from
its content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core import ItemsBatch, NightlyConfig, Recaller, apply_items, run_nightly
from storage import Layout, VersionFiles, VersionStore, read_json

pytestmark = pytest.mark.e2e  # one tiny nightly


TOWERS = {
    "linear": {"kind": "linear", "embedding_dim": 64, "history_len": 200},
    "hybrid": {"kind": "hybrid", "embedding_dim": 16, "linear_dim": 64, "history_len": 200},
}


@pytest.fixture(scope="module", params=sorted(TOWERS))
def linear_root(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    cfg = NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "tower": TOWERS[request.param],
            "train": {"epochs": 2},
            "runtime": {"storage_root": str(root)},
        }
    )
    run_nightly(cfg)
    return root


def test_nightly_publishes_a_linear_model_far_above_popularity(linear_root: Path) -> None:
    store = VersionStore(Layout(linear_root))
    version = store.open_current(verify=True)
    kind = version.manifest.config["tower"]["kind"]
    assert kind in TOWERS
    dims = TOWERS[kind]["embedding_dim"] + TOWERS[kind].get("linear_dim", 0)
    assert version.manifest.embedding_dim == dims
    rankers = read_json(version.file(VersionFiles.METRICS))["rankers"]
    assert rankers["model"]["recall@50"] > 2 * rankers["popularity"]["recall@50"]
    training = read_json(version.file(VersionFiles.TRAINING))
    # linear: one closed-form "epoch"; hybrid: the MLP part's two, then the linear fit.
    assert len(training["epoch_loss"]) == (1 if kind == "linear" else 3)
    assert np.isfinite(training["epoch_loss"]).all()
    # A hybrid records the blend it chose on validation, and every share it tried.
    if kind == "hybrid":
        tried = training["blend_validation"]
        assert len(tried) == 11 and tried[f"{training['blend_share']:g}"] == max(tried.values())
        from core.report_data import load_version_report, report_sections

        inputs = load_version_report(store, version.version_id)
        (section,) = [s for s in report_sections(inputs) if s.title == "Training"]
        line = f"hybrid blend chosen on validation: linear share {training['blend_share']:g} ("
        assert any(x.startswith(line) for x in section.lines), section.lines
    else:
        assert training["blend_share"] is None and training["blend_validation"] == {}


def test_recall_serves_known_and_unknown_users_from_unnormalised_vectors(
    linear_root: Path,
) -> None:
    recaller = Recaller.load(VersionStore(Layout(linear_root)))
    user = int(recaller.tables.user_id[0])
    top = recaller.recall(user, k=20)
    assert len(top.item_ids) == 20 and np.all(np.diff(top.scores) <= 0)
    seen = set(recaller.history.items_of(user).tolist())
    assert seen and not seen & set(top.item_ids.tolist())
    # A user the version does not know reads an empty bag: the constant row ranks the
    # catalogue (popularity), not noise and not an error.
    cold = recaller.recall(None, np.zeros(recaller.model.spec.profile_dim), k=5)
    assert len(cold.item_ids) == 5 and np.isfinite(cold.scores).all()
    assert cold.scores[0] > cold.scores[-1]


def test_a_new_item_is_embedded_from_content_and_served(linear_root: Path) -> None:
    store = VersionStore(Layout(linear_root))
    content_dim = Recaller.load(store).model.spec.content_dim
    rng = np.random.default_rng(0)
    raw = {
        "item_id": 10**9,
        "category": 1,
        "content": [round(float(v), 4) for v in rng.normal(size=content_dim)],
    }
    recorded, version = apply_items(
        str(linear_root), ItemsBatch(event_id="lin-1", operation="create", items=[raw])
    )
    assert recorded.inserted == 1 and version == store.current()
    recaller = Recaller.load(store)
    n = len(recaller.tables.item_id)
    assert n == 601  # the tiny world's 600 and the new one
    found = recaller.recall(None, np.zeros(recaller.model.spec.profile_dim), k=n)
    assert 10**9 in set(found.item_ids.tolist())
    # Its vector came from the content map, not the unknown ID row alone: it differs
    # from an item of the same category with other content.
    score = found.scores[found.item_ids == 10**9]
    assert np.isfinite(score).all() and score[0] not in set(found.scores[found.item_ids != 10**9])
