"""`towerflow alerts apply` / `alerts remove`: towerflow's alert automations (a nightly
failed, no nightly completed for N hours, an items event had rejected items) on any
Prefect server, for `prefect deploy` users; `towerflow serve` applies the same ones
(``apply_configured_alerts``). What they are and say: ``flows.alerts``, docs/alerts.md.

Settings come from ``TOWERFLOW_ALERT_*`` variables (``core.alerting.AlertSettings``);
the options win. Register with ``app.add_typer(alerts_app, name="alerts")``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.errors import PrefectServerUnavailable
from cli.options import JsonOpt, apply_prefect_defaults, fail, setup_logging

if TYPE_CHECKING:
    from core.alerting import AlertSettings
    from flows.alerts import AppliedAlerts

__all__ = [
    "AlertBlockOpt",
    "StaleHoursOpt",
    "WebhookUrlOpt",
    "alert_settings",
    "alerts_app",
    "apply_configured_alerts",
]

logger = logging.getLogger(__name__)

WebhookUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--alert-webhook-url",
        help='Send alerts as JSON {"text": ...} to this URL (a Custom Webhook block; a '
        "Slack incoming webhook URL works as is) [default: $TOWERFLOW_ALERT_WEBHOOK_URL].",
        show_default=False,
    ),
]
AlertBlockOpt = Annotated[
    str | None,
    typer.Option(
        "--alert-block",
        help="Send alerts through this existing notification block instead, "
        "<block-type-slug>/<name> (slack-webhook/ops, sendgrid-email/oncall, ...) "
        "[default: $TOWERFLOW_ALERT_BLOCK].",
        show_default=False,
    ),
]
StaleHoursOpt = Annotated[
    float | None,
    typer.Option(
        "--alert-stale-hours",
        help="Alert when no nightly run has completed for this many hours "
        "[default: $TOWERFLOW_ALERT_STALE_HOURS, else 26].",
        show_default=False,
    ),
]
ApiUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        help="The Prefect server's API, e.g. http://127.0.0.1:4200/api "
        "[default: $PREFECT_API_URL].",
        show_default=False,
    ),
]


def alert_settings(
    webhook_url: str | None = None, block: str | None = None, stale_hours: float | None = None
) -> AlertSettings:
    """``AlertSettings`` from the environment, with the options that were given on top
    (an invalid combination or value is a usage error, exit 2)."""
    from pydantic import ValidationError

    from core.alerting import AlertSettings
    from core.config import validation_summary

    options: dict[str, Any] = {
        "webhook_url": webhook_url,
        "block": block,
        "stale_hours": stale_hours,
    }
    given = {k: v for k, v in options.items() if v is not None}
    # An option replaces the other way of naming the block, not just its own variable.
    if "block" in given:
        given.setdefault("webhook_url", None)
    elif "webhook_url" in given:
        given["block"] = None
    try:
        return AlertSettings(**given)
    except ValidationError as e:
        raise fail(f"invalid alert settings: {validation_summary(e)}", 2) from None


def apply_configured_alerts(settings: AlertSettings, api_url: str | None) -> AppliedAlerts:
    """``flows.alerts.apply_alerts`` against `api_url`; a block that is missing or cannot
    notify is a usage error (exit 2), a server that does not answer exit 8."""
    import httpx

    from flows.alerts import apply_alerts

    try:
        return asyncio.run(apply_alerts(settings, api_url))
    except ValueError as e:
        raise fail(f"alerts: {e}", 2) from None
    except httpx.TransportError as e:
        raise _unreachable(api_url, e) from e


def _server(api_url: str | None) -> str:
    """The API to apply to: --api-url, else PREFECT_API_URL; never a temporary server
    (automations there would vanish with it)."""
    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise PrefectServerUnavailable(
            "no Prefect server given: start one (`prefect server start "
            "--host 127.0.0.1`) and pass --api-url or export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return url


def _unreachable(api_url: str | None, error: Exception) -> PrefectServerUnavailable:
    return PrefectServerUnavailable(
        f"no Prefect server answers at {api_url}: {error}; start one (`prefect server start "
        "--host 127.0.0.1`) or fix --api-url / PREFECT_API_URL"
    )


alerts_app = typer.Typer(
    help="Alert automations on a Prefect server (docs/alerts.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@alerts_app.command("apply")
def apply_command(
    api_url: ApiUrlOpt = None,
    webhook_url: WebhookUrlOpt = None,
    block: AlertBlockOpt = None,
    stale_hours: StaleHoursOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or update the alert automations (a nightly failed; no nightly completed for
    --alert-stale-hours; an items event had rejected items) and their notification block.

    Idempotent: run it after every `prefect deploy`; automations that already say the
    same are left as they are. With no webhook URL or block configured, nothing is
    created (and it says so).
    """
    apply_prefect_defaults()
    setup_logging()
    settings = alert_settings(webhook_url, block, stale_hours)
    # Not configured: nothing to send to a server, whether one is given or not.
    applied = apply_configured_alerts(settings, _server(api_url) if settings.configured else None)
    if as_json:
        typer.echo(json.dumps(applied.to_json()))
    elif applied.automations:
        for name, outcome in applied.automations.items():
            typer.echo(f"{name}: {outcome}")
        typer.echo(f"notifications through block {applied.block}")
    else:
        typer.echo("alerts not configured: no automations created")


@alerts_app.command("remove")
def remove_command(api_url: ApiUrlOpt = None, as_json: JsonOpt = False) -> None:
    """Delete the alert automations (the notification block stays)."""
    apply_prefect_defaults()
    setup_logging()
    import httpx

    from flows.alerts import remove_alerts

    url = _server(api_url)
    try:
        removed = asyncio.run(remove_alerts(url))
    except httpx.TransportError as e:
        raise _unreachable(url, e) from e
    typer.echo(json.dumps({"removed": removed}) if as_json else f"removed: {removed or 'none'}")
