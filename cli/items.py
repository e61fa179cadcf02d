"""`towerflow add-items` and `retire-items`: send item events to a running Prefect server
(or apply them in-process with `--now`); `towerflow serve` (cli.deployments) serves the
deployments that react.

An items event is `towerflow.items.created` / `towerflow.items.retired` on resource
`towerflow.items.cli`, payload `{"event_id", "items": [...]}` for small batches or
`{"event_id", "path": "<store>/inbox/<event_id>.<ext>"}` (the file copied into the store)
for large ones. The Prefect event id is derived from the event id (uuid5), so re-sending
the same event id is deduplicated twice over: by the server and by the catalogue.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import typer

from cli.errors import PrefectServerUnavailable
from cli.options import RootOpt, apply_prefect_defaults, fail, root_path

__all__ = ["add_items_command", "emit_items_event", "retire_items_command"]

_EVENTS: Final = {"create": "towerflow.items.created", "retire": "towerflow.items.retired"}
_RESOURCE: Final = {"prefect.resource.id": "towerflow.items.cli"}

NowOpt = Annotated[
    bool, typer.Option("--now", help="Run the new-items flow in-process instead of sending.")
]
WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait",
        help="Seconds to wait until CURRENT includes the event (0: return once sent).",
    ),
]
EventIdOpt = Annotated[
    str | None,
    typer.Option("--event-id", help="Idempotency key [default: a new UUID].", show_default=False),
]


def prefect_event_id(event_id: str) -> uuid.UUID:
    """The Prefect event id for an items event id (the same id for the same event)."""
    try:
        return uuid.UUID(event_id)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"towerflow:{event_id}")


def emit_items_event(
    operation: str, event_id: str, payload: dict[str, Any], flush: bool = True
) -> None:
    """Send one items event to the server at PREFECT_API_URL; with `flush`, return once
    it is sent (else Prefect's events worker sends it in the background, and at exit)."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    sent = emit_event(
        _EVENTS[operation],
        resource=_RESOURCE,
        payload={"event_id": event_id, **payload},
        id=prefect_event_id(event_id),
    )
    if sent is None:
        raise PrefectServerUnavailable(
            "Prefect events are disabled here (PREFECT_API_URL, settings)"
        )
    if flush:
        EventsWorker.drain_all(timeout=30)


def _send(
    operation: Literal["create", "retire"],
    root: Path,
    event_id: str,
    items: list[Any],
    file: Path | None,
    now: bool,
    wait: float,
) -> dict[str, Any]:
    from core.events import event_payload, wait_until_published

    out: dict[str, Any] = {"event_id": event_id, "operation": operation, "items": len(items)}
    if now:
        apply_prefect_defaults()
        from cli.errors import debug_requested
        from cli.flowlogs import quiet_run_failures
        from flows.new_items import new_items

        # Large batches go through the store's inbox, as a sent event's do: the flow reads
        # files only from there.
        staged = event_payload(root, event_id, file, items)
        # A failing step raises its own exception (no CURRENT yet, ...): reported once by
        # cli.errors; Prefect's tracebacks of it stay in the run's logs.
        with quiet_run_failures(enabled=not debug_requested()):
            result = new_items(
                event_id=event_id,
                operation=operation,
                items=staged.get("items"),
                path=staged.get("path"),
                storage_root=str(root),
            )
        return out | result.model_dump()
    from cli.deployments import check_server

    check_server(os.environ.get("PREFECT_API_URL"))
    payload = event_payload(root, event_id, file, items)
    emit_items_event(operation, event_id, payload)
    out["sent"] = "path" if "path" in payload else "inline"
    if wait > 0:
        out |= wait_until_published(root, event_id, wait)
    return out


def add_items_command(
    file: Annotated[Path, typer.Argument(help="Items: .parquet, .json or .csv.")],
    root: RootOpt = None,
    now: NowOpt = False,
    wait: WaitOpt = 0.0,
    event_id: EventIdOpt = None,
) -> None:
    """Add (or update) items: send a towerflow.items.created event, or apply it with --now.

    Items have `item_id`, `category` and `content` (the model's content floats; CSV:
    `content` as a JSON list or columns content_0..). Prints a JSON summary.
    """
    from core.items_validation import read_items_file

    try:
        items = read_items_file(file)
        out = _send(
            "create", root_path(root), event_id or str(uuid.uuid4()), items, file, now, wait
        )
    except (ValueError, TimeoutError) as e:  # bad items; --wait ran out
        raise fail(str(e)) from None
    typer.echo(json.dumps(out))


def retire_items_command(
    item_ids: Annotated[list[int], typer.Argument(help="Item IDs to take out of results.")],
    root: RootOpt = None,
    now: NowOpt = False,
    wait: WaitOpt = 0.0,
    event_id: EventIdOpt = None,
) -> None:
    """Retire items: send a towerflow.items.retired event, or apply it with --now."""
    try:
        out = _send(
            "retire",
            root_path(root),
            event_id or str(uuid.uuid4()),
            list(item_ids),
            None,
            now,
            wait,
        )
    except (ValueError, TimeoutError) as e:  # bad items; --wait ran out
        raise fail(str(e)) from None
    typer.echo(json.dumps(out))
