"""Data snapshots for a run: generate the synthetic world or import real files, once;
the same configuration names the same immutable snapshot, which later runs reuse."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from core.config import DataConfig
from core.dataio import write_events, write_world
from core.importing import run_import
from core.refs import SnapshotRef
from model.synthetic import (
    SyntheticConfig,
    event_blocks,
    generate_events,
    generate_world,
    synthetic_config,
)
from storage import (
    INTERACTIONS,
    ITEMS,
    USERS,
    Layout,
    SnapshotFiles,
    begin_snapshot,
    commit_snapshot,
    read_num_rows,
    snapshot_exists,
    snapshot_path,
    write_json,
)

__all__ = [
    "commit_generated",
    "ensure_snapshot",
    "generator_config",
    "snapshot_id_for",
    "snapshot_ref",
]

# Prefect forwards the core's loggers to the run page (PREFECT_LOGGING_EXTRA_LOGGERS).
log = logging.getLogger(__name__)


def generator_config(cfg: DataConfig) -> SyntheticConfig:
    """The generator's config for a synthetic data config: its scale, seed and overrides."""
    return synthetic_config(cfg.scale, seed=cfg.seed, **cfg.overrides)


def snapshot_id_for(cfg: DataConfig) -> str:
    """Deterministic id: the same source, scale, seed and overrides (and generator
    version) name the same snapshot."""
    gen = generator_config(cfg)
    digest = hashlib.sha256(gen.model_dump_json().encode()).hexdigest()[:10]
    return f"{cfg.source}-{cfg.scale}-seed{cfg.seed}-{digest}"


def snapshot_ref(layout: Layout, snapshot_id: str) -> SnapshotRef:
    """The reference of committed snapshot ``snapshot_id`` (its table sizes from footers)."""
    folder = snapshot_path(layout, snapshot_id)
    return SnapshotRef(
        root=str(layout.root),
        snapshot_id=snapshot_id,
        n_users=read_num_rows(folder / USERS.file_name, USERS),
        n_items=read_num_rows(folder / ITEMS.file_name, ITEMS),
        n_interactions=read_num_rows(folder / INTERACTIONS.file_name, INTERACTIONS),
    )


def ensure_snapshot(root: str, cfg: DataConfig) -> SnapshotRef:
    """Generate the synthetic snapshot for ``cfg`` under store ``root`` unless it is already
    stored; for source 'import', import the configured files (reused when unchanged); for
    source 'snapshot', the stored snapshot ``cfg.snapshot_id`` as it is."""
    logger = log
    layout = Layout(Path(root))
    if cfg.source == "snapshot":
        assert cfg.snapshot_id is not None  # DataConfig's validator
        # snapshot_path raises SnapshotNotFoundError listing the stored ids.
        snapshot_path(layout, cfg.snapshot_id)
        ref = snapshot_ref(layout, cfg.snapshot_id)
        logger.info(
            "using stored snapshot %s: %d users, %d items, %d interactions",
            ref.snapshot_id,
            ref.n_users,
            ref.n_items,
            ref.n_interactions,
        )
        return ref
    if cfg.source == "import":
        assert cfg.importing is not None  # DataConfig's validator
        result = run_import(layout, cfg.importing)
        logger.info(
            "%s snapshot %s: %d users, %d items, %d interactions",
            "reusing imported" if result.reused else "imported",
            result.ref.snapshot_id,
            result.ref.n_users,
            result.ref.n_items,
            result.ref.n_interactions,
        )
        return result.ref
    snapshot_id = snapshot_id_for(cfg)
    if snapshot_exists(layout, snapshot_id):
        logger.info("reusing data snapshot %s", snapshot_id)
        return snapshot_ref(layout, snapshot_id)
    gen_cfg = generator_config(cfg)
    start = time.perf_counter()
    staging = begin_snapshot(layout, snapshot_id)
    world = generate_world(gen_cfg)
    write_world(staging, world)
    write_events(staging, [generate_events(gen_cfg, world, range(event_blocks(gen_cfg)))])
    ref = commit_generated(layout, cfg, snapshot_id, staging)
    logger.info(
        "generated snapshot %s in %.1f s: %d users, %d items, %d interactions",
        snapshot_id,
        time.perf_counter() - start,
        ref.n_users,
        ref.n_items,
        ref.n_interactions,
    )
    return ref


def commit_generated(
    layout: Layout, cfg: DataConfig, snapshot_id: str, staging: Path
) -> SnapshotRef:
    """Write ``snapshot.json`` into the staged synthetic snapshot (its tables written) and
    commit it; its reference."""
    meta = {
        "snapshot_id": snapshot_id,
        "source": cfg.source,
        "scale": cfg.scale,
        "created_at": datetime.now(UTC).isoformat(),
        "generator": json.loads(generator_config(cfg).model_dump_json()),
    }
    write_json(staging / SnapshotFiles.MANIFEST, meta)
    commit_snapshot(layout, snapshot_id, staging)
    return snapshot_ref(layout, snapshot_id)
