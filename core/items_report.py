"""What one items event did, as markdown for the operator scanning runs in the UI (the
new-items flow posts it under the stable key `items-report`; the per-item rejections go
under `items-rejected`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

from core.items import RecordSummary
from core.items_stream import EventOutcome

__all__ = ["ITEMS_ARTIFACT", "REJECTIONS_ARTIFACT", "render_batch_report", "render_items_report"]

# Artifact keys of the new-items flow's runs.
ITEMS_ARTIFACT: Final = "items-report"
REJECTIONS_ARTIFACT: Final = "items-rejected"


_MD_SPECIAL = "\\`*_[]<>|#!"


def _md(text: str) -> str:
    """``text`` as literal markdown on one table line: every character markdown (or the
    UI's HTML) would interpret is backslash-escaped, line breaks become spaces."""
    flat = " ".join(text.splitlines())
    return "".join(f"\\{c}" if c in _MD_SPECIAL else c for c in flat)


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


_BATCH_ROWS: Final = 200


def render_batch_report(outcomes: Sequence[EventOutcome], version_id: str) -> str:
    """Markdown for a batch of streamed events published as one delta: totals, then one
    row per event (its own outcome; the first 200 shown), CURRENT afterwards."""
    by_status = Counter(o.status for o in outcomes)
    lines = [
        f"# Items events: {len(outcomes):,} in one batch",
        "",
        f"- applied {by_status['applied']:,}, duplicates {by_status['duplicate']:,}, "
        f"failed {by_status['failed']:,}; CURRENT `{version_id}`",
        f"- items: inserted {sum(o.inserted for o in outcomes):,}, updated "
        f"{sum(o.updated for o in outcomes):,}, rejected {sum(o.rejected for o in outcomes):,}",
        "",
        "| event | operation | outcome | received | inserted | updated | unchanged | rejected "
        "| why it failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes[:_BATCH_ROWS]:
        lines.append(
            f"| {_md(o.event_id)} | {o.operation} | {o.status} | {o.received:,} | "
            f"{o.inserted:,} | {o.updated:,} | {o.unchanged:,} | {o.rejected:,} | "
            f"{_md(o.error or '')} |"
        )
    if len(outcomes) > _BATCH_ROWS:
        lines += ["", f"... and {len(outcomes) - _BATCH_ROWS:,} more events (the flow's result)."]
    return "\n".join(lines) + "\n"
