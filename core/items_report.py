"""What one items event did, as markdown for the operator scanning runs in the UI (the
new-items flow posts it under the stable key `items-report`; the per-item rejections go
under `items-rejected`)."""

from __future__ import annotations

from typing import Final

from core.items import RecordSummary

__all__ = ["ITEMS_ARTIFACT", "REJECTIONS_ARTIFACT", "render_items_report"]

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
