"""The project's table schemas: one `TableSpec` per parquet table towerflow stores, in
data snapshots (`USERS` ... `TRUTH_ITEMS`) and in published versions (`VERSION_*`,
`ITEM_EMBEDDINGS`)."""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from storage.parquet import ColumnSpec, TableSpec, vector

__all__ = [
    "ALL_TABLES",
    "CATEGORIES",
    "IMPRESSIONS",
    "INTERACTIONS",
    "ITEMS",
    "ITEM_EMBEDDINGS",
    "ITEM_IDS",
    "TRUTH_ITEMS",
    "TRUTH_USERS",
    "USERS",
    "USER_IDS",
    "VERSION_HISTORY",
    "VERSION_ITEMS",
    "VERSION_RECENT",
    "VERSION_TOMBSTONES",
    "VERSION_USERS",
]

USERS: Final = TableSpec(
    "users",
    (
        ColumnSpec("user_id", pa.int64()),
        # User profile features, float32 (dim fixed per snapshot).
        ColumnSpec("profile", vector(None)),
    ),
)

ITEMS: Final = TableSpec(
    "items",
    (
        ColumnSpec("item_id", pa.int64()),
        ColumnSpec("category", pa.int32()),
        # Item content features, float32.
        ColumnSpec("content", vector(None)),
    ),
)

CATEGORIES: Final = TableSpec(
    "categories",
    (
        ColumnSpec("category", pa.int32()),
        ColumnSpec("name", pa.string()),
    ),
)

INTERACTIONS: Final = TableSpec(
    "interactions",
    (
        ColumnSpec("user_id", pa.int64()),
        ColumnSpec("item_id", pa.int64()),
        # Unix seconds, UTC.
        ColumnSpec("timestamp", pa.int64()),
    ),
)

IMPRESSIONS: Final = TableSpec(
    "impressions",
    (
        ColumnSpec("user_id", pa.int64()),
        ColumnSpec("item_id", pa.int64()),
        # Unix seconds, UTC.
        ColumnSpec("timestamp", pa.int64()),
        # 1 = click, 0 = shown without click.
        ColumnSpec("label", pa.int8()),
    ),
)

ITEM_EMBEDDINGS: Final = TableSpec(
    "item_embeddings",
    (
        ColumnSpec("item_id", pa.int64()),
        ColumnSpec("embedding", vector(None)),
    ),
)

# Hidden ground truth of the synthetic generator (for evaluation only, never training).
TRUTH_USERS: Final = TableSpec(
    "truth_users",
    (
        ColumnSpec("user_id", pa.int64()),
        ColumnSpec("latent", vector(None)),
    ),
)

TRUTH_ITEMS: Final = TableSpec(
    "truth_items",
    (
        ColumnSpec("item_id", pa.int64()),
        ColumnSpec("latent", vector(None)),
        # Log-popularity the generator used when sampling interactions with this item.
        ColumnSpec("log_popularity", pa.float32()),
    ),
)

# The user and item features a version serves from, with each ID's row in the towers' ID
# embedding tables (0 = ID unseen in training). Named like their files in a version.
VERSION_USERS: Final = TableSpec(
    "users",
    (
        ColumnSpec("user_id", pa.int64()),
        ColumnSpec("id_row", pa.int64()),
        ColumnSpec("profile", vector(None)),
    ),
)

VERSION_ITEMS: Final = TableSpec(
    "items",
    (
        ColumnSpec("item_id", pa.int64()),
        ColumnSpec("id_row", pa.int64()),
        ColumnSpec("category", pa.int32()),
        ColumnSpec("content", vector(None)),
    ),
)

# Every item each user has interacted with (sorted item IDs), so serving can exclude what a
# user has already seen. One row per user with history; list offsets keep it compact.
VERSION_HISTORY: Final = TableSpec(
    "history",
    (
        ColumnSpec("user_id", pa.int64()),
        ColumnSpec("items", pa.list_(pa.int64())),
    ),
)

# Imported snapshots: stored int64 ID -> the raw ID of the source data (an integer literal
# or any string). One row per stored ID; identity when every raw ID was an integer.
USER_IDS: Final = TableSpec(
    "user_ids",
    (
        ColumnSpec("id", pa.int64()),
        ColumnSpec("raw_id", pa.string()),
    ),
)

ITEM_IDS: Final = TableSpec(
    "item_ids",
    (
        ColumnSpec("id", pa.int64()),
        ColumnSpec("raw_id", pa.string()),
    ),
)

# Each user's latest items (item IDs, most recent first), what a user tower with the
# behaviour-history feature reads online. Only in versions whose model has the feature.
VERSION_RECENT: Final = TableSpec(
    "recent",
    (
        ColumnSpec("user_id", pa.int64()),
        ColumnSpec("items", pa.list_(pa.int64())),
    ),
)

# Retired item IDs a version's index still holds because it cannot remove vectors (HNSW,
# refined IVF-PQ); recall filters them out at query time.
VERSION_TOMBSTONES: Final = TableSpec("tombstones", (ColumnSpec("item_id", pa.int64()),))

ALL_TABLES: Final[tuple[TableSpec, ...]] = (
    USERS,
    ITEMS,
    CATEGORIES,
    INTERACTIONS,
    IMPRESSIONS,
    ITEM_EMBEDDINGS,
    TRUTH_USERS,
    TRUTH_ITEMS,
    VERSION_USERS,
    VERSION_ITEMS,
    VERSION_HISTORY,
    VERSION_RECENT,
    VERSION_TOMBSTONES,
    USER_IDS,
    ITEM_IDS,
)
