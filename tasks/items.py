"""Item catalogue steps: record an items event (validate, post rejections, append =
acknowledge), announce its rejections (the `towerflow.items.rejected` event alerts match),
publish CURRENT + the catalogue entries it lacks, fold the catalogue into a nightly build,
and post what an event did."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from core import compaction, items, items_stream
from core.alerting import rejection_event
from core.items import RecordSummary
from core.items_report import (
    ITEMS_ARTIFACT,
    REJECTIONS_ARTIFACT,
    render_batch_report,
    render_items_report,
)
from core.items_stream import EventOutcome
from core.items_validation import ItemsBatch, Validated
from core.refs import StageRef
from core.store import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS
from tasks.retry import IO_RETRY

__all__ = [
    "announce_batch_rejections",
    "announce_rejections",
    "compact_chain",
    "merge_catalogue",
    "post_batch_report",
    "post_items_report",
    "publish_catalogue",
    "record_events",
    "record_items",
    "request_compaction",
]


def _post_rejections(batch: ItemsBatch, validated: Validated) -> None:
    rows, description = items.rejection_table(batch, validated)
    create_table_artifact(key=REJECTIONS_ARTIFACT, table=rows, description=description)


@task(name="record-items", **IO_RETRY)
def record_items(root: str, batch: ItemsBatch) -> RecordSummary:
    """``core.items.record_items``, posting the rejected items with their reasons as the
    `items-rejected` artifact. Once this returns the valid items are acknowledged."""
    return items.record_items(root, batch, logger=get_run_logger(), on_rejected=_post_rejections)


def _announce(recorded: RecordSummary) -> bool:
    event = rejection_event(recorded, flow_run_name=flow_run.get_name() or "")
    if event is None:
        return False
    # Asynchronous: Prefect's events worker sends it (at the latest when the run's
    # process exits); None when events are disabled here.
    sent = emit_event(event.event, resource=event.resource, payload=event.payload, id=event.id)
    if sent is None:
        get_run_logger().warning("events are disabled: %s not sent", event.event)
    return sent is not None


@task(name="announce-rejections")
def announce_rejections(recorded: RecordSummary) -> bool:
    """Emit `towerflow.items.rejected` (event id, counts, the first reasons; the
    `towerflow-items-rejected` automation alerts on it) when the event rejected items;
    returns whether an event was sent. Its Prefect id is derived from the items event's
    id: a retry's second copy is dropped by the server."""
    return _announce(recorded)


@task(name="record-events", **IO_RETRY)
def record_events(root: str, batch: str) -> tuple[list[EventOutcome], list[RecordSummary]]:
    """``core.items_stream.record_events`` over the events of the inbox file ``batch``:
    each recorded (acknowledged) on its own, its rejected items posted as an
    `items-rejected` artifact; returns every event's outcome and the summaries of those
    recorded."""
    events = items_stream.read_batch(root, batch)
    return items_stream.record_events(
        root, events, logger=get_run_logger(), on_rejected=_post_rejections
    )


@task(name="announce-rejections")
def announce_batch_rejections(recorded: list[RecordSummary]) -> int:
    """`towerflow.items.rejected` for each event of a batch that rejected items (as
    `announce-rejections` for one); returns how many were sent."""
    return sum(_announce(r) for r in recorded)


@task(name="publish-catalogue", **IO_RETRY)
def publish_catalogue(
    root: str,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
) -> str:
    """``core.items.publish_catalogue``: CURRENT (verified) + the catalogue entries it
    lacks; returns CURRENT's id afterwards."""
    return items.publish_catalogue(root, keep_versions, keep_item_versions, logger=get_run_logger())


@task(name="merge-catalogue", **IO_RETRY)
def merge_catalogue(stage: StageRef) -> int:
    """``core.items.merge_catalogue``: fold the whole catalogue into the staged nightly
    build; returns the item count."""
    return items.merge_catalogue(stage, logger=get_run_logger())


def _post_report(markdown: str, description: str) -> str:
    create_markdown_artifact(key=ITEMS_ARTIFACT, markdown=markdown, description=description)
    return markdown


@task(name="report-items", **IO_RETRY)
def post_items_report(recorded: RecordSummary, version_id: str) -> str:
    """Post `items-report` for this event; returns its markdown."""
    return _post_report(
        render_items_report(recorded, version_id),
        f"items event {recorded.event_id}: {recorded.operation}",
    )


@task(name="report-items", **IO_RETRY)
def post_batch_report(outcomes: list[EventOutcome], version_id: str) -> str:
    """Post `items-report` for a batch of events: one row per event; returns its markdown."""
    return _post_report(
        render_batch_report(outcomes, version_id), f"{len(outcomes)} items events in one batch"
    )


@task(name="request-compaction")
def request_compaction(root: str, address: str | None, max_chain: int) -> bool:
    """Emit `towerflow.chain.long` (the `compact-items` deployment's trigger) when
    CURRENT stacks ``max_chain`` deltas or more; returns whether an event was sent. The
    event path never compacts: it only asks."""
    request = compaction.compaction_request(root, address, max_chain)
    if request is None:
        return False
    sent = emit_event(
        request.event, resource=request.resource, payload=request.payload, id=request.id
    )
    logger = get_run_logger()
    if sent is None:
        logger.warning("events are disabled: %s not sent", request.event)
    else:
        logger.info("CURRENT stacks %s deltas: compaction requested", request.payload["depth"])
    return sent is not None


@task(name="compact-chain", **IO_RETRY)
def compact_chain(
    root: str,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
    min_depth: int = 1,
) -> compaction.CompactResult:
    """``core.compaction.compact_current``: CURRENT's deltas folded into one complete
    version (when it stacks ``min_depth`` deltas or more)."""
    result = compaction.compact_current(
        root, keep_versions, keep_item_versions, min_depth=min_depth
    )
    get_run_logger().info(
        "%s: %d deltas folded, CURRENT %s",
        "compacted" if result.compacted else "nothing to compact",
        result.folded,
        result.version_id,
    )
    return result
