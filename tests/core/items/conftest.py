"""A store with one small published version built in well under a second: random tower
weights (no training), 60 items in 5 categories, 20 users; index type chosen per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from core.versionio import write_embeddings
from model.config import TowerConfig, TowerSpec
from model.embed import embed_items
from model.features import category_rows
from model.index import build_index
from model.towers import TwoTower
from storage import (
    Layout,
    Lineage,
    VersionFiles,
    VersionStore,
    save_index,
    save_model,
    vectors_to_arrow,
    write_json,
    write_table,
)
from storage.schemas import VERSION_HISTORY, VERSION_ITEMS, VERSION_USERS

N_ITEMS, N_USERS, N_CATEGORIES, CONTENT_DIM, PROFILE_DIM = 60, 20, 5, 8, 4
SPEC = TowerSpec(
    tower=TowerConfig(embedding_dim=16, id_dim=8, category_dim=4, hidden=(32,)),
    n_users=N_USERS,
    n_items=N_ITEMS,
    n_categories=N_CATEGORIES,
    profile_dim=PROFILE_DIM,
    content_dim=CONTENT_DIM,
)

MakeStore = Callable[..., VersionStore]


def publish_mini_version(root: Path, factory: str = "Flat", seed: int = 0) -> VersionStore:
    """Publish a random-weight nightly version (item IDs 10, 20, ..., 600) into the store
    at `root` (made if new) on top of its CURRENT."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TwoTower(SPEC).eval()
    store = VersionStore(Layout(root))
    vid = store.new_version_id()
    staging = store.begin(vid)
    save_model(staging, model.state_dict(), SPEC.model_dump(mode="json"))
    item_id = np.arange(1, N_ITEMS + 1, dtype=np.int64) * 10
    id_row = np.arange(1, N_ITEMS + 1, dtype=np.int64)
    category = (np.arange(N_ITEMS) % N_CATEGORIES).astype(np.int32)
    content = rng.normal(size=(N_ITEMS, CONTENT_DIM)).astype(np.float32)
    write_table(
        staging / VersionFiles.ITEMS,
        pa.table(
            {
                "item_id": item_id,
                "id_row": id_row,
                "category": category,
                "content": vectors_to_arrow(content),
            }
        ),
        VERSION_ITEMS,
    )
    user_id = np.arange(1, N_USERS + 1, dtype=np.int64)
    write_table(
        staging / VersionFiles.USERS,
        pa.table(
            {
                "user_id": user_id,
                "id_row": user_id,
                "profile": vectors_to_arrow(rng.normal(size=(N_USERS, PROFILE_DIM))),
            }
        ),
        VERSION_USERS,
    )
    write_table(
        staging / VersionFiles.HISTORY,
        pa.table(
            {
                "user_id": user_id[:1],
                "items": pa.array([[int(item_id[0])]], pa.list_(pa.int64())),
            }
        ),
        VERSION_HISTORY,
    )
    vectors = embed_items(model, id_row, category_rows(category, N_CATEGORIES), content)
    write_embeddings(staging, item_id, vectors)
    save_index(staging / VersionFiles.INDEX, build_index(vectors, item_id, factory))
    write_json(staging / VersionFiles.METRICS, {"note": "random weights"})
    parent = store.current()  # None in a new store; a second call publishes a new nightly
    store.publish(
        vid,
        expected_current=parent,
        config={},
        lineage=Lineage(data_snapshot=None, parent_version=parent),
        embedding_dim=16,
        metric="inner_product",
        item_count=N_ITEMS,
        extra={"index": {"factory": factory, "knob": None, "knob_value": None}},
    )
    return store


@pytest.fixture
def make_store(tmp_path: Path) -> MakeStore:
    """`make_store(factory="Flat")` -> a store with one mini version published."""

    def make(factory: str = "Flat") -> VersionStore:
        return publish_mini_version(tmp_path / f"store-{factory.replace(',', '_')}", factory)

    return make


def item(item_id: int, category: int = 1, seed: int | None = None) -> dict[str, object]:
    """A valid raw item (as an event carries it)."""
    rng = np.random.default_rng(item_id if seed is None else seed)
    return {
        "item_id": item_id,
        "category": category,
        "content": [round(float(v), 4) for v in rng.normal(size=CONTENT_DIM)],
    }
