"""Synthetic data generation split by blocks of users: plan -> shards -> merge (see
``core.sharded``).

- **Plan** (the flow's process): reuse a stored snapshot (or import, or take a stored id)
  exactly as ``core.snapshots.ensure_snapshot`` does; otherwise open the snapshot's
  staging folder, draw the world (users and items, O(users + items)) and write its tables,
  and cut the user blocks into shards.
- **Shards** (any worker): draw the world again from the config (it is a pure function of
  it: 1.4 s at 1M items here, less than reading it back), then the events of their user
  blocks, each block from its own random stream (``model.synthetic``), and write them as
  interactions and impressions parts. Drawing the events is the costly part (Gumbel top-k
  over a 50k-item candidate set per user: 0.53 s per 512-user block at 1M items).
- **Merge** (the flow's process): the parts (each sorted by time on its worker) checked
  and merged in block order, window by window of time, into the snapshot's event tables
  (``core.dataio.write_events``); ``snapshot.json`` last, then the commit.

Whatever the split, the snapshot holds the tables one process writes for the same config
(``tests/core/test_sharded_data.py``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from core.config import DataConfig
from core.dataio import events_tables, tables_events, write_events, write_world
from core.progress import StepLogger
from core.refs import SnapshotRef
from core.sharded import Span, spans, staged_here
from core.snapshots import commit_generated, ensure_snapshot, generator_config, snapshot_id_for
from model.synthetic import event_blocks, generate_events, generate_world
from storage import (
    IMPRESSIONS,
    INTERACTIONS,
    Layout,
    PartRef,
    ShardFolder,
    begin_snapshot,
    snapshot_exists,
)

__all__ = ["DataPlan", "EventParts", "generate_shard", "merge_generation", "plan_generation"]

log = logging.getLogger(__name__)

GENERATE_STEP = "generate"


class DataPlan(BaseModel):
    """What the sharded data step will do: hand back ``snapshot`` (stored, imported, or
    named) when it is set; else draw the events of user blocks ``spans`` (in blocks, not
    users) into snapshot ``snapshot_id`` staged at ``staging`` (a folder name under the
    store's snapshot staging folder)."""

    model_config = ConfigDict(frozen=True)

    root: str
    snapshot: SnapshotRef | None
    snapshot_id: str = ""
    staging: str = ""
    spans: list[Span] = []
    started: float = 0.0


class EventParts(BaseModel):
    """One shard's parts: its interactions and impressions."""

    model_config = ConfigDict(frozen=True)

    interactions: PartRef
    impressions: PartRef


def _layout(plan: DataPlan) -> Layout:
    return Layout(Path(plan.root))


def _folder(plan: DataPlan) -> ShardFolder:
    # Named after the staging folder, which is private to this run's writer: a concurrent
    # run drawing the same snapshot never shares parts (storage.retention keeps the parts
    # while the staging folder lives).
    return ShardFolder(_layout(plan), plan.staging, GENERATE_STEP)


def _staging(plan: DataPlan) -> Path:
    return _layout(plan).staging_snapshots_dir / plan.staging


def plan_generation(
    root: str,
    cfg: DataConfig,
    shard_users: int | None,
    n_shards: int = 1,
    *,
    logger: StepLogger = log,
) -> DataPlan:
    """The stored snapshot for ``cfg`` when there is one (or what import gives); else the
    staged world of a new synthetic snapshot and its user blocks cut into shards of about
    ``shard_users`` users (None: ``n_shards`` shards), rounded up to whole blocks."""
    layout = Layout(Path(root))
    snapshot_id = snapshot_id_for(cfg) if cfg.source == "synthetic" else ""
    if not snapshot_id or snapshot_exists(layout, snapshot_id):
        return DataPlan(root=root, snapshot=ensure_snapshot(root, cfg))
    started = time.time()
    gen = generator_config(cfg)
    staging = begin_snapshot(layout, snapshot_id)
    write_world(staging, generate_world(gen))
    per_shard = None if shard_users is None else -(-shard_users // gen.block_users)
    cut = spans(event_blocks(gen), per_shard, 1, n_shards)
    logger.info(
        "prepare-data: world of %s drawn in %.1f s; %d user block(s) of %d in %d shard(s)",
        snapshot_id,
        time.time() - started,
        event_blocks(gen),
        gen.block_users,
        len(cut),
    )
    return DataPlan(
        root=root,
        snapshot=None,
        snapshot_id=snapshot_id,
        staging=staging.name,
        spans=cut,
        started=started,
    )


def generate_shard(cfg: DataConfig, plan: DataPlan, span: Span) -> EventParts:
    """The events of user blocks ``[span.lo, span.hi)``, written as two parts."""
    if plan.snapshot is not None:
        raise ValueError("prepare-data: the plan reuses a snapshot; there is nothing to draw")
    staged_here(_staging(plan), f"prepare-data: snapshot {plan.snapshot_id}")
    gen = generator_config(cfg)
    events = generate_events(gen, generate_world(gen), range(span.lo, span.hi))
    tables = events_tables(events)
    folder = _folder(plan)
    return EventParts(
        interactions=folder.write(
            f"interactions-{span.index:05d}.parquet", tables[INTERACTIONS], INTERACTIONS
        ),
        impressions=folder.write(
            f"impressions-{span.index:05d}.parquet", tables[IMPRESSIONS], IMPRESSIONS
        ),
    )


def merge_generation(
    cfg: DataConfig,
    plan: DataPlan,
    parts: list[EventParts],
    *,
    logger: StepLogger = log,
) -> SnapshotRef:
    """Check the parts, merge them in block order by time into the event tables and
    commit the snapshot; its reference."""
    if plan.snapshot is not None:
        return plan.snapshot
    if len(parts) != len(plan.spans):
        raise ValueError(f"prepare-data: {len(parts)} part(s) for {len(plan.spans)} shard(s)")
    folder = _folder(plan)
    start = time.perf_counter()
    staging = _staging(plan)
    write_events(
        staging,
        [
            tables_events(
                folder.read(p.interactions, INTERACTIONS), folder.read(p.impressions, IMPRESSIONS)
            )
            for p in parts
        ],
    )
    ref = commit_generated(_layout(plan), cfg, plan.snapshot_id, staging)
    folder.remove()
    logger.info(
        "prepare-data: merged %d part(s) in %.1f s; snapshot %s generated in %.1f s: %d users, "
        "%d items, %d interactions",
        len(parts),
        time.perf_counter() - start,
        ref.snapshot_id,
        time.time() - plan.started,
        ref.n_users,
        ref.n_items,
        ref.n_interactions,
    )
    return ref
