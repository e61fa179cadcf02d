"""The new-items flow's run artifact: what one event did, for the operator scanning runs in
the UI (stable key `items-report`; the per-item rejections are `items-rejected`)."""

from __future__ import annotations

from typing import Final

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.items import REJECTIONS_ARTIFACT, RecordSummary
from tasks.retry import IO_RETRY

__all__ = ["ITEMS_ARTIFACT", "post_items_report", "render_items_report"]

ITEMS_ARTIFACT: Final = "items-report"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_items_report(recorded: RecordSummary, version_id: str) -> str:
    """Markdown: the event, counts by outcome, rejection reasons, CURRENT afterwards."""
    r = recorded
    lines = [f"# Items event `{r.event_id}` ({r.operation})", ""]
    if r.duplicate:
        lines += [
            "- **Duplicate**: this event was already applied; nothing changed.",
            f"- CURRENT: `{version_id}`",
        ]
        return "\n".join(lines) + "\n"
    if r.operation == "retire":
        rows = [
            ("retired", r.changed),
            ("already retired or never served", r.accepted - r.changed),
            ("rejected", r.rejected),
        ]
    else:
        rows = [
            ("inserted (new items)", r.inserted),
            ("updated (new content for served items)", r.updated),
            ("unchanged (same content as recorded)", r.accepted - r.changed),
            ("rejected", r.rejected),
        ]
    lines += [
        f"- received {r.received:,} items; catalogue head {r.head:,}; CURRENT `{version_id}`",
        "",
        "| outcome | items |",
        "|---|---|",
        *(f"| {name} | {n:,} |" for name, n in rows),
    ]
    if r.reasons:
        lines += [
            "",
            f"## Rejection reasons (each item: `{REJECTIONS_ARTIFACT}` artifact)",
            "",
            "| reason | items |",
            "|---|---|",
            *(f"| {_md(reason)} | {n:,} |" for reason, n in r.reasons.items()),
        ]
    return "\n".join(lines) + "\n"


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
