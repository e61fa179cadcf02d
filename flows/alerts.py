"""Alerts as code: three Prefect automations, all sending through one notification block.

- ``towerflow-nightly-failed``: a ``nightly`` flow run failed, crashed or timed out (its
  name and the reason: the quality gate's message for a gate failure);
- ``towerflow-nightly-stale``: no ``nightly`` flow run completed within
  ``AlertSettings.stale_hours`` of the last one (or of ``apply_alerts``); a proactive
  trigger, once per outage;
- ``towerflow-items-rejected``: an items event had rejected items (the
  ``towerflow.items.rejected`` event ``tasks.items.announce_rejections`` sends).

``apply_alerts`` creates or updates them against any Prefect server, idempotently: an
automation that already says the same is left untouched (re-creating the stale trigger
would restart its window, so a `towerflow serve` restarted every day could never alert).
`towerflow serve` and `towerflow alerts apply` both call it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal
from uuid import UUID

from core.alerting import (
    ARMED_EVENT,
    AUTOMATION_NAMES,
    FAILED_AUTOMATION,
    NIGHTLY_FLOW,
    REJECTED_AUTOMATION,
    REJECTED_EVENT,
    STALE_AUTOMATION,
    AlertSettings,
    AlertText,
    failed_text,
    rejected_text,
    stale_text,
    window_text,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.events.schemas.automations import Automation, AutomationCore

__all__ = ["AppliedAlerts", "apply_alerts", "build_automations", "remove_alerts"]

logger = logging.getLogger(__name__)

# Terminal states of a run that did not succeed (TimedOut is a FAILED-type state with its
# own name, hence its own event).
_FAILED_EVENTS: Final = frozenset(
    {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
)
# The flow, not a deployment: a nightly run by `towerflow run`, `towerflow serve` or a
# worker alerts the same way.
_NIGHTLY_RUNS: Final = {
    "match": {"prefect.resource.id": "prefect.flow-run.*"},
    "match_related": {"prefect.resource.role": "flow", "prefect.resource.name": NIGHTLY_FLOW},
}
# The staleness window's clock: each completed nightly restarts it (it is both the trigger's
# `after` and its `expect` event), and `apply_alerts` starts it with ARMED_EVENT, which
# matches the same filters. Measured (prefect 3.9.1): a plain proactive trigger without
# `after` fired 2-3 windows after the last completion, and right when a late completion
# arrived; this one fires one window (+ <= 5 s, the server's proactive granularity) after
# the last completion, then waits for the next one.
_ARMING_RESOURCE: Final = {
    "prefect.resource.id": "towerflow.alerts.nightly-stale",
    "prefect.resource.name": "towerflow alerts",
}
_ARMING_RELATED: Final = {
    "prefect.resource.id": f"towerflow.flow.{NIGHTLY_FLOW}",
    "prefect.resource.role": "flow",
    "prefect.resource.name": NIGHTLY_FLOW,
}
# What the Custom Webhook block POSTs: Slack's incoming-webhook shape, JSON `{"text"}`.
_WEBHOOK_JSON: Final = {"text": "{{subject}}\n\n{{body}}"}

Outcome = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class AppliedAlerts:
    """What `apply_alerts` did: the block used and each automation's outcome (empty when
    alerts are not configured)."""

    block: str | None = None
    block_document_id: UUID | None = None
    automations: dict[str, Outcome] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "block_document_id": str(self.block_document_id) if self.block_document_id else None,
            "automations": self.automations,
        }


def build_automations(settings: AlertSettings, block_document_id: UUID) -> list[AutomationCore]:
    """The three automations, each sending through the block `block_document_id`."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    def notify(text: AlertText) -> list[Any]:
        return [
            SendNotification(
                block_document_id=block_document_id, subject=text.subject, body=text.body
            )
        ]

    window = settings.stale_seconds
    return [
        AutomationCore(
            name=FAILED_AUTOMATION,
            description="towerflow: a nightly flow run failed, crashed or timed out.",
            trigger=EventTrigger(
                **_NIGHTLY_RUNS,
                expect=set(_FAILED_EVENTS),
                # One alert per run, whatever else fails at the same time.
                for_each={"prefect.resource.id"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=notify(failed_text()),
        ),
        AutomationCore(
            name=STALE_AUTOMATION,
            description=f"towerflow: no nightly flow run completed for {window_text(window)}.",
            trigger=EventTrigger(
                match={"prefect.resource.id": ["prefect.flow-run.*", "towerflow.alerts.*"]},
                match_related=_NIGHTLY_RUNS["match_related"],
                after={"prefect.flow-run.Completed", ARMED_EVENT},
                expect={"prefect.flow-run.Completed"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=window),
            ),
            actions=notify(stale_text(window)),
        ),
        AutomationCore(
            name=REJECTED_AUTOMATION,
            description="towerflow: an items event had rejected items.",
            trigger=EventTrigger(
                match={"prefect.resource.id": "towerflow.items.*"},
                expect={REJECTED_EVENT},
                for_each={"prefect.resource.id"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=notify(rejected_text()),
        ),
    ]


@contextmanager
def _api(api_url: str | None) -> Iterator[None]:
    """Prefect's client settings pointed at `api_url` (None: as configured)."""
    if api_url is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


async def apply_alerts(settings: AlertSettings, api_url: str | None = None) -> AppliedAlerts:
    """Create or update the notification block and the three automations on the server
    at `api_url` (None: PREFECT_API_URL). Not configured: nothing, and one log line."""
    if not settings.configured:
        # A warning: it shows at every command's default log level, and alerts that
        # are off should not go unnoticed.
        logger.warning(
            "alerts: no TOWERFLOW_ALERT_WEBHOOK_URL (or TOWERFLOW_ALERT_BLOCK) configured: "
            "no automations created"
        )
        return AppliedAlerts()
    from prefect.client.orchestration import get_client

    with _api(api_url):
        async with get_client() as client:
            block, block_id = await _notification_block(client, settings)
            outcomes: dict[str, Outcome] = {}
            for automation in build_automations(settings, block_id):
                outcomes[automation.name] = await _upsert(client, automation)
        await _arm_staleness_window()
    logger.info("alerts through block %s: %s", block, outcomes)
    return AppliedAlerts(block, block_id, outcomes)


async def _arm_staleness_window() -> None:
    """Start the staleness window now unless one is running (the server keeps an open
    window as it is), so an alert comes even if no nightly ever completes."""
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    async with get_events_client() as events:
        await events.emit(
            Event(event=ARMED_EVENT, resource=_ARMING_RESOURCE, related=[_ARMING_RELATED])
        )


async def remove_alerts(api_url: str | None = None) -> list[str]:
    """Delete towerflow's automations (the block stays); returns the names removed."""
    from prefect.client.orchestration import get_client

    removed = []
    with _api(api_url):
        async with get_client() as client:
            for name in AUTOMATION_NAMES:
                for automation in await client.read_automations_by_name(name):
                    await client.delete_automation(automation.id)
                    removed.append(name)
    return removed


async def _notification_block(client: PrefectClient, settings: AlertSettings) -> tuple[str, UUID]:
    """The block alerts go through: `settings.block` as it is, or the Custom Webhook block
    saved (created or overwritten) from `settings.webhook_url`."""
    from prefect.exceptions import ObjectNotFound

    if settings.block is not None:
        slug, _, name = settings.block.partition("/")
        try:
            doc = await client.read_block_document_by_name(name, slug, include_secrets=False)
        except ObjectNotFound:
            raise ValueError(f"no block {settings.block} on the Prefect server") from None
        capabilities = doc.block_schema.capabilities if doc.block_schema else []
        if "notify" not in capabilities:
            raise ValueError(f"block {settings.block} cannot send notifications")
        assert doc.id is not None
        return settings.block, doc.id
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    assert settings.webhook_url is not None  # settings.configured
    block = CustomWebhookNotificationBlock(
        name=settings.block_name,
        url=settings.webhook_url.get_secret_value(),
        json_data=dict(_WEBHOOK_JSON),
    )
    # Overwriting keeps the document's id, so the automations stay as they are.
    block_id = await block.asave(settings.block_name, overwrite=True, client=client)
    return f"{block.get_block_type_slug()}/{settings.block_name}", block_id


def _comparable(automation: AutomationCore | Automation) -> dict[str, Any]:
    """An automation's definition without the ids the client or the server gave it."""
    from prefect.events.schemas.automations import AutomationCore

    core = AutomationCore.model_validate(
        automation.model_dump(include=set(AutomationCore.model_fields))
    )
    return core.model_dump(exclude={"trigger": {"id"}})


async def _upsert(client: PrefectClient, automation: AutomationCore) -> Outcome:
    """Create `automation`, or update the one of its name unless it already says the
    same; extra automations of that name (made by hand, or by a race) are deleted."""
    found = await client.read_automations_by_name(automation.name)
    if not found:
        await client.create_automation(automation)
        return "created"
    first, *extra = found
    for duplicate in extra:
        logger.warning("alerts: deleting a second automation named %s", automation.name)
        await client.delete_automation(duplicate.id)
    if _comparable(first) == _comparable(automation):
        return "unchanged"
    await client.update_automation(first.id, automation)
    return "updated"
