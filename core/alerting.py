"""What towerflow alerts on and what the alerts say, without Prefect: the settings
(``TOWERFLOW_ALERT_*``), the automations' names, the notification templates, and the
``towerflow.items.rejected`` event a new-items run sends when it rejected items.

``flows.alerts`` turns these into Prefect automations; ``tasks.items`` sends the event.
The templates are rendered by the Prefect server with Jinja, where a missing key renders
as an empty string without any error: every key used here is one the event always has
(tests/flows/test_alerts.py renders each template and checks the text).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final, NamedTuple, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.items import RecordSummary

__all__ = [
    "ARMED_EVENT",
    "AUTOMATION_NAMES",
    "FAILED_AUTOMATION",
    "NIGHTLY_FLOW",
    "REJECTED_AUTOMATION",
    "REJECTED_EVENT",
    "STALE_AUTOMATION",
    "AlertSettings",
    "AlertText",
    "RejectionEvent",
    "failed_text",
    "rejected_text",
    "rejection_event",
    "stale_text",
    "window_text",
]

NIGHTLY_FLOW: Final = "nightly"  # the flow's name (flows/nightly.py), whoever runs it
REJECTED_EVENT: Final = "towerflow.items.rejected"
# Sent by `alerts apply`: starts the staleness window when no nightly has completed yet.
ARMED_EVENT: Final = "towerflow.alerts.armed"

# Stable names: `alerts apply` finds its automations by them (idempotent updates).
FAILED_AUTOMATION: Final = "towerflow-nightly-failed"
STALE_AUTOMATION: Final = "towerflow-nightly-stale"
REJECTED_AUTOMATION: Final = "towerflow-items-rejected"
AUTOMATION_NAMES: Final = (FAILED_AUTOMATION, STALE_AUTOMATION, REJECTED_AUTOMATION)

# Prefect refuses proactive triggers with a shorter window.
_MIN_STALE_SECONDS: Final = 10.0
_BLOCK_REF: Final = re.compile(r"^[a-z0-9-]+/[A-Za-z0-9_.-]+$")
# Reasons carried by the rejected event (and so in the alert); the artifact has them all.
_REASONS_SHOWN: Final = 5
_REASON_CHARS: Final = 300


class AlertSettings(BaseSettings):
    """Where alerts go and when the nightly counts as stale, from ``TOWERFLOW_ALERT_*``
    (created at the edge: `towerflow serve`, `towerflow alerts apply`; their options win).

    Alerts go through one Prefect notification block: either a Custom Webhook block that
    `alerts apply` saves (as ``block_name``) from ``webhook_url``, or an existing block
    of any notification type named by ``block`` (Slack, e-mail, ...). Neither set: no
    alerts."""

    model_config = SettingsConfigDict(env_prefix="TOWERFLOW_ALERT_", extra="ignore")

    webhook_url: SecretStr | None = Field(
        None,
        description='URL the alerts are POSTed to as JSON `{"text": ...}` (a Slack incoming '
        "webhook takes it as is); saved in the Custom Webhook block `block_name`.",
    )
    block: str | None = Field(
        None,
        description="An existing notification block, `<block-type-slug>/<name>` (e.g. "
        "`slack-webhook/ops`, `sendgrid-email/oncall`), used instead of `webhook_url`.",
    )
    block_name: str = Field(
        "towerflow-alerts",
        pattern=r"^[a-z0-9-]+$",
        description="Name of the Custom Webhook block saved from `webhook_url`.",
    )
    stale_hours: float = Field(
        26.0,
        description="Alert when no nightly flow run has completed for this many hours.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.webhook_url is not None and self.block is not None:
            raise ValueError("set either the webhook URL or an existing block, not both")
        if self.block is not None and not _BLOCK_REF.match(self.block):
            raise ValueError(
                f"block {self.block!r} is not `<block-type-slug>/<block-name>` "
                "(e.g. slack-webhook/ops)"
            )
        if self.stale_hours * 3600 < _MIN_STALE_SECONDS:
            raise ValueError(
                f"stale_hours {self.stale_hours} is under Prefect's minimum window "
                f"({_MIN_STALE_SECONDS:.0f} s = {_MIN_STALE_SECONDS / 3600:.4f} h)"
            )
        return self

    @property
    def configured(self) -> bool:
        """Whether alerts have somewhere to go."""
        return self.webhook_url is not None or self.block is not None

    @property
    def stale_seconds(self) -> float:
        return self.stale_hours * 3600


class AlertText(NamedTuple):
    """A notification's subject and body: Jinja templates the Prefect server renders."""

    subject: str
    body: str


def window_text(seconds: float) -> str:
    """`26 h`, `90 min`, `30 s`: the staleness window as people write it."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


# The flow-run state-change event's own labels (no API call): the run's name, its state
# and the state's message, which for a failed nightly is "Flow run encountered an
# exception: QualityGateError: quality gate failed: ..." (the prefix is dropped).
_RUN: Final = "event.resource.name"
_STATE: Final = "event.resource['prefect.state-name']"
_MESSAGE: Final = (
    "event.resource['prefect.state-message'] | replace('Flow run encountered an exception: ', '')"
)


def failed_text() -> AlertText:
    """A nightly flow run failed, crashed or timed out: its name and the reason."""
    return AlertText(
        subject=f"towerflow: nightly run {{{{ {_RUN} }}}} {{{{ {_STATE} | lower }}}}",
        body=(
            f"Nightly flow run {{{{ {_RUN} }}}} ended in state {{{{ {_STATE} }}}}.\n"
            f"Reason: {{{{ {_MESSAGE} }}}}\n"
            "Flow run id: {{ event.resource.id | replace('prefect.flow-run.', '') }}. "
            "A failed nightly publishes nothing unless it failed after its publish step: "
            "`towerflow versions` shows what serves; the run's logs and its "
            "`nightly-report` artifact say more."
        ),
    )


def stale_text(stale_seconds: float) -> AlertText:
    """No nightly completed within the window (a proactive trigger: there is no event,
    so the text names the window and the automation only)."""
    window = window_text(stale_seconds)
    return AlertText(
        subject=f"towerflow: no nightly run completed in the last {window}",
        body=(
            f"No nightly flow run has completed in the last {window} (automation "
            "{{ automation.name }}). The last published version keeps serving but grows "
            "stale: check the nightly deployment's runs (scheduled? failed? a worker or "
            "`towerflow serve` running?)."
        ),
    )


def rejected_text() -> AlertText:
    """An items event had rejected items: the event, the run, the counts, the reasons."""
    p = "event.payload"
    return AlertText(
        subject=(
            f"towerflow: {{{{ {p}.rejected }}}} item(s) rejected in items event "
            f"{{{{ {p}.event_id }}}}"
        ),
        body=(
            f"Items event {{{{ {p}.event_id }}}} ({{{{ {p}.operation }}}}), flow run "
            f"{{{{ {p}.flow_run_name }}}}: {{{{ {p}.rejected }}}} of {{{{ {p}.received }}}} "
            f"items rejected, {{{{ {p}.accepted }}}} accepted.\n"
            f"Reasons: {{{{ {p}.reasons | join('; ') }}}}\n"
            "Every rejected item with its reason: the run's `items-rejected` artifact."
        ),
    )


class RejectionEvent(NamedTuple):
    """What `tasks.items.announce_rejections` emits (`prefect.events.emit_event`)."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any]
    id: uuid.UUID


def rejection_event(recorded: RecordSummary, flow_run_name: str) -> RejectionEvent | None:
    """The ``towerflow.items.rejected`` event of a recorded items event, None when it
    rejected nothing. Its id is derived from the items event's id, so a retried task's
    second emission is dropped by the server as a duplicate."""
    if recorded.rejected <= 0:
        return None
    reasons = [
        f"{_clip(reason)} ({n} item{'s' if n != 1 else ''})"
        for reason, n in list(recorded.reasons.items())[:_REASONS_SHOWN]
    ]
    if len(recorded.reasons) > _REASONS_SHOWN:
        reasons.append(f"{len(recorded.reasons) - _REASONS_SHOWN} more reason(s)")
    # Payload keys that are not names of dict methods (`items`, `keys`, ...): Jinja's
    # `payload.items` would find the method, not the key.
    payload = {
        "event_id": recorded.event_id,
        "operation": recorded.operation,
        "flow_run_name": flow_run_name,
        "received": recorded.received,
        "accepted": recorded.accepted,
        "rejected": recorded.rejected,
        "reasons": reasons,
    }
    return RejectionEvent(
        event=REJECTED_EVENT,
        resource={
            "prefect.resource.id": f"towerflow.items.{recorded.event_id}",
            "prefect.resource.name": f"items event {recorded.event_id}",
        },
        payload=payload,
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"towerflow:{recorded.event_id}:rejected"),
    )


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
