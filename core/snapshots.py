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
from core.dataio import write_synthetic
from core.importing import run_import
from core.refs import SnapshotRef
from model.synthetic import generate, synthetic_config
from storage import (
    INTERACTIONS,
    ITEMS,
    USERS,
    Layout,
    begin_snapshot,
    commit_snapshot,
    read_num_rows,
    snapshot_exists,
    snapshot_path,
)

__all__ = ["ensure_snapshot", "snapshot_id_for"]

# Prefect forwards the core's loggers to the run page (PREFECT_LOGGING_EXTRA_LOGGERS).
log = logging.getLogger(__name__)


def snapshot_id_for(cfg: DataConfig) -> str:
    """Deterministic id: the same source, scale, seed and overrides name the same snapshot."""
    gen = synthetic_config(cfg.scale, seed=cfg.seed, **cfg.overrides)
    digest = hashlib.sha256(gen.model_dump_json().encode()).hexdigest()[:10]
    return f"{cfg.source}-{cfg.scale}-seed{cfg.seed}-{digest}"


def _ref(layout: Layout, snapshot_id: str) -> SnapshotRef:
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
        ref = _ref(layout, cfg.snapshot_id)
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
        return _ref(layout, snapshot_id)
    gen_cfg = synthetic_config(cfg.scale, seed=cfg.seed, **cfg.overrides)
    start = time.perf_counter()
    data = generate(gen_cfg)
    staging = begin_snapshot(layout, snapshot_id)
    meta = {
        "snapshot_id": snapshot_id,
        "source": cfg.source,
        "scale": cfg.scale,
        "created_at": datetime.now(UTC).isoformat(),
        "generator": json.loads(gen_cfg.model_dump_json()),
    }
    write_synthetic(staging, data, meta)
    commit_snapshot(layout, snapshot_id, staging)
    logger.info(
        "generated snapshot %s in %.1f s: %d users, %d items, %d interactions",
        snapshot_id,
        time.perf_counter() - start,
        len(data.user_id),
        len(data.item_id),
        len(data.inter_user),
    )
    return _ref(layout, snapshot_id)
