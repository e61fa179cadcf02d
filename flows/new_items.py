"""The new-items flow: make created, changed or retired items retrievable in seconds,
between nightly rebuilds. Triggered by `towerflow.items.created` / `.retired` events."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel

from core.config import RuntimeConfig
from core.items_stream import EventOutcome
from core.items_validation import ItemsBatch
from core.lifecycle import resolve_runtime
from tasks.steps import items_steps

__all__ = ["NewItemsResult", "new_items", "new_items_batch"]


class NewItemsResult(BaseModel):
    """What one run did: the event's item counts and CURRENT afterwards."""

    event_id: str
    duplicate: bool
    accepted: int
    rejected: int
    version_id: str


def run_name() -> str:
    """Readable flow run names: `new-items-<operation>-<event id>`."""
    p = flow_run.parameters
    return f"new-items-{p.get('operation', 'create')}-{p.get('event_id') or 'manual'}"


@flow(name="new-items", flow_run_name=run_name, log_prints=False)
def new_items(
    event_id: str | None = None,
    operation: Literal["create", "retire"] = "create",
    items: list[Any] | None = None,
    path: str | None = None,
    storage_root: str | None = None,
) -> NewItemsResult:
    """Apply one items event (at-least-once delivery: repeats are no-ops).

    Args:
        event_id: idempotency key (the event's id); None = this flow run's id (a manual
            run: no deduplication across runs).
        operation: 'create' upserts items (a known ID with new content replaces its
            vector), 'retire' takes them out of results.
        items: inline items, `{"item_id", "category", "content"}` objects (create) or IDs
            (retire); small batches.
        path: a parquet / JSON / CSV file of items instead (large batches); relative
            paths are under the store's inbox/.
        storage_root: artifact store root; None = TOWERFLOW_ROOT or ./.towerflow.

    Steps:
    1. record-items: validate each item (rejections and reasons -> `items-rejected`
       artifact), append the valid ones to the item catalogue: acknowledged.
    2. announce-rejections: when items were rejected, a `towerflow.items.rejected` event
       (the `towerflow-items-rejected` alert, docs/alerts.md).
    3. publish-catalogue: the catalogue entries CURRENT lacks -> a delta version on top of
       it (only the changed items, embedded by the model of CURRENT's chain; new IDs
       through the unknown-ID bucket), compare-and-swap CURRENT with bounded retries.
    4. report-items: the `items-report` artifact (inserted / updated / unchanged /
       rejected counts, rejection reasons, CURRENT afterwards).
    5. request-compaction: a `towerflow.chain.long` event when CURRENT stacks
       `runtime.max_delta_chain` deltas or more (the `compact-items` deployment folds
       them, off this path).
    """
    config = RuntimeConfig(storage_root=storage_root)
    runtime = resolve_runtime(config)
    steps = items_steps(config.timeouts)
    event_id = event_id or f"flow-run-{flow_run.get_id()}"
    batch = ItemsBatch(event_id=event_id, operation=operation, items=items, path=path)
    recorded = steps.record_items(runtime.root, batch)
    steps.announce_rejections(recorded)  # before publishing: the alert does not wait for it
    version_id = steps.publish_catalogue(
        runtime.root, runtime.keep_versions, runtime.keep_item_versions
    )
    steps.post_items_report(recorded, version_id)
    # Never compact here: ask the compact-items deployment when the chain is too long.
    steps.request_compaction(runtime.root, storage_root, runtime.max_delta_chain)
    return NewItemsResult(
        event_id=event_id,
        duplicate=recorded.duplicate,
        accepted=recorded.accepted,
        rejected=recorded.rejected,
        version_id=version_id,
    )


def batch_run_name() -> str:
    """`new-items-batch-<n>-events-<id>` (the batch file's name)."""
    name = str(flow_run.parameters.get("batch") or "batch-unnamed")
    return "new-items-" + name.removesuffix(".json")


@flow(name="new-items-batch", flow_run_name=batch_run_name, log_prints=False)
def new_items_batch(batch: str, storage_root: str | None = None) -> list[EventOutcome]:
    """Apply the items events that arrived together as one delta (what `towerflow
    serve`'s items consumer runs, in its own long-lived process: `flows.items_consumer`).

    Args:
        batch: a file of the store's inbox (`core.items_stream.write_batch`) holding the
            delivered events in order: Prefect's event id, its name
            (`towerflow.items.created` / `.retired`) and payload (`{"event_id", "items"}`
            or `{"event_id", "path"}`, as the new-items deployment's trigger reads it).
            A file, not the events: Prefect refuses parameters over 512 KB.
        storage_root: artifact store root; None = TOWERFLOW_ROOT or ./.towerflow.

    Each event keeps its own outcome (applied with its counts, duplicate, or failed with
    its reason), its own acknowledgement and its own rejection artifact and alert event;
    they share one publish. A batch of no events publishes what the catalogue holds
    beyond CURRENT (the consumer's retry after a failed publish).

    Steps: record-events (each event validated and appended: acknowledged),
    announce-rejections, publish-catalogue (one delta), report-items (a row per event),
    request-compaction.
    """
    config = RuntimeConfig(storage_root=storage_root)
    runtime = resolve_runtime(config)
    steps = items_steps(config.timeouts)
    outcomes, recorded = steps.record_events(runtime.root, batch)
    steps.announce_batch_rejections(recorded)
    version_id = steps.publish_catalogue(
        runtime.root, runtime.keep_versions, runtime.keep_item_versions
    )
    steps.post_batch_report(outcomes, version_id)
    steps.request_compaction(runtime.root, storage_root, runtime.max_delta_chain)
    return outcomes
