"""Item catalogue steps: record an items event (validate, post rejections, append =
acknowledge), publish CURRENT + the catalogue entries it lacks, fold the catalogue into a
nightly build, and post what an event did."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core import items
from core.items import RecordSummary
from core.items_report import ITEMS_ARTIFACT, REJECTIONS_ARTIFACT, render_items_report
from core.items_validation import ItemsBatch, Validated
from core.refs import StageRef
from core.store import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS
from tasks.retry import IO_RETRY

__all__ = ["merge_catalogue", "post_items_report", "publish_catalogue", "record_items"]


def _post_rejections(batch: ItemsBatch, validated: Validated) -> None:
    rows, description = items.rejection_table(batch, validated)
    create_table_artifact(key=REJECTIONS_ARTIFACT, table=rows, description=description)


@task(name="record-items", **IO_RETRY)
def record_items(root: str, batch: ItemsBatch) -> RecordSummary:
    """``core.items.record_items``, posting the rejected items with their reasons as the
    `items-rejected` artifact. Once this returns the valid items are acknowledged."""
    return items.record_items(root, batch, logger=get_run_logger(), on_rejected=_post_rejections)


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


@task(name="report-items", **IO_RETRY)
def post_items_report(recorded: RecordSummary, version_id: str) -> str:
    """Post `items-report` for this event; returns its markdown."""
    markdown = render_items_report(recorded, version_id)
    create_markdown_artifact(
        key=ITEMS_ARTIFACT,
        markdown=markdown,
        description=f"items event {recorded.event_id}: {recorded.operation}",
    )
    return markdown
