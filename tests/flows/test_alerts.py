"""Alerts as code (flows/alerts.py, docs/alerts.md).

End to end: a real `prefect server start` with its trigger services, a webhook receiver on
127.0.0.1, `towerflow alerts apply` (twice: the second changes nothing); then a nightly
that fails at the quality gate, an items event with a rejected item, and no nightly
completing for a short window: each alert arrives once, naming the run and the reason.
Besides, without a server: the templates rendered by Prefect's own Jinja environment (a
missing key would render as nothing, silently), the settings, the rejection event.
"""

from __future__ import annotations

import http.server
import json
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.live import BIN, LiveServer, free_port, live_prefect, wait_for
from cli.app import app
from core.alerting import (
    REJECTED_EVENT,
    AlertSettings,
    failed_text,
    rejected_text,
    rejection_event,
    stale_text,
)
from core.items import RecordSummary
from tests.core.items.conftest import publish_mini_version

log = logging.getLogger(__name__)

STALE_S = 20.0  # the staleness window of the live test (Prefect's minimum is 10 s)
GATE_MESSAGE = "quality gate failed: model recall@50 = 0.6292 is below 282.6357"


# --- templates and settings, no server ----------------------------------------------------


def _render(template: str, context: dict[str, Any]) -> str:
    from prefect.server.utilities.user_templates import render_user_template_sync

    return render_user_template_sync(template, context)


def _failed_event() -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    run_id = uuid.uuid4()
    return ReceivedEvent.model_validate(
        {
            "occurred": datetime.now().astimezone(),
            "event": "prefect.flow-run.Failed",
            "resource": {
                "prefect.resource.id": f"prefect.flow-run.{run_id}",
                "prefect.resource.name": "nightly-synthetic-tiny-20260101-020000",
                "prefect.state-name": "Failed",
                "prefect.state-type": "FAILED",
                "prefect.state-message": "Flow run encountered an exception: "
                f"QualityGateError: {GATE_MESSAGE}",
            },
            "id": uuid.uuid4(),
        }
    )


def test_failed_text_names_the_run_and_the_gate_reason() -> None:
    text = failed_text()
    context = {"event": _failed_event()}
    subject, body = _render(text.subject, context), _render(text.body, context)
    assert subject == "towerflow: nightly run nightly-synthetic-tiny-20260101-020000 failed"
    assert "Nightly flow run nightly-synthetic-tiny-20260101-020000 ended in state Failed." in body
    assert f"Reason: QualityGateError: {GATE_MESSAGE}\n" in body
    assert "encountered an exception" not in body


def test_rejected_text_has_the_event_run_counts_and_reasons() -> None:
    recorded = RecordSummary(
        event_id="ev-1",
        operation="create",
        duplicate=False,
        received=3,
        accepted=1,
        rejected=2,
        changed=1,
        head=7,
        reasons={"missing field(s): content": 1, "item_id must be an integer": 1},
    )
    event, again = (rejection_event(recorded, run) for run in ("new-items-create-ev-1", "x"))
    assert event is not None and again is not None
    assert event.resource["prefect.resource.id"] == "towerflow.items.ev-1"
    assert event.id == again.id  # a retried task's second event is a duplicate
    context = {"event": {"payload": event.payload}}
    body = _render(rejected_text().body, context)
    assert body.startswith(
        "Items event ev-1 (create), flow run new-items-create-ev-1: 2 of 3 items rejected, "
        "1 accepted.\nReasons: missing field(s): content (1 item); item_id must be an "
        "integer (1 item)\n"
    )
    assert _render(rejected_text().subject, context) == (
        "towerflow: 2 item(s) rejected in items event ev-1"
    )
    assert rejection_event(recorded.model_copy(update={"rejected": 0}), "x") is None


def test_stale_text_names_the_window() -> None:
    text = stale_text(26 * 3600)
    assert text.subject == "towerflow: no nightly run completed in the last 26 h"
    body = _render(text.body, {"automation": {"name": "towerflow-nightly-stale"}})
    assert "in the last 26 h (automation towerflow-nightly-stale)" in body


def test_settings_come_from_the_environment_and_options_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cli.alerts import alert_settings

    monkeypatch.setenv("TOWERFLOW_ALERT_WEBHOOK_URL", "http://hooks.example/x")
    monkeypatch.setenv("TOWERFLOW_ALERT_STALE_HOURS", "30")
    s = AlertSettings()
    assert s.configured and s.stale_seconds == 30 * 3600
    # --alert-block replaces the webhook from the environment instead of clashing with it.
    s = alert_settings(block="slack-webhook/ops", stale_hours=2)
    assert (s.block, s.webhook_url, s.stale_hours) == ("slack-webhook/ops", None, 2)
    with pytest.raises(ValueError, match="minimum window"):
        AlertSettings(stale_hours=5 / 3600)
    with pytest.raises(ValueError, match="not both"):
        AlertSettings(webhook_url="http://a", block="slack-webhook/ops")  # type: ignore[arg-type]


def test_unconfigured_alerts_create_nothing_and_say_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from flows.alerts import apply_alerts

    monkeypatch.delenv("TOWERFLOW_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("TOWERFLOW_ALERT_BLOCK", raising=False)
    with caplog.at_level(logging.WARNING, logger="flows.alerts"):
        applied = asyncio.run(apply_alerts(AlertSettings(), "http://127.0.0.1:9/api"))
    assert applied.automations == {}
    (line,) = [r.getMessage() for r in caplog.records if r.name == "flows.alerts"]
    assert "no automations created" in line and "TOWERFLOW_ALERT_WEBHOOK_URL" in line


def test_a_bad_block_reference_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        app, ["alerts", "apply", "--alert-block", "not a block", "--api-url", "http://x/api"]
    )
    assert result.exit_code == 2, result.output
    assert "is not `<block-type-slug>/<block-name>`" in result.output


# --- end to end ---------------------------------------------------------------------------


class _Receiver(http.server.ThreadingHTTPServer):
    """Collects the JSON bodies POSTed to it, with the time each arrived."""

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def texts(self, prefix: str) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, b["text"]) for t, b in self.received if b["text"].startswith(prefix)]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.received.append((time.time(), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: no access log on stderr."""


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _towerflow(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "towerflow"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _json(proc: subprocess.Popen[str], expect_rc: int = 0) -> dict[str, Any]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == expect_rc, f"{proc.args!r}:\n{out}\n{err[-4000:]}"
    return dict(json.loads(out.strip().splitlines()[-1]))


def _nightly_runs(server: LiveServer, state: str) -> list[dict[str, Any]]:
    body = {
        "flows": {"name": {"any_": ["nightly"]}},
        "flow_runs": {"state": {"type": {"any_": [state]}}},
    }
    return list(server.post("/flow_runs/filter", body))


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.prefect
@pytest.mark.e2e
def test_each_alert_reaches_the_webhook_once_with_the_run_and_reason(
    receiver: _Receiver, tmp_path: Path
) -> None:
    start = time.monotonic()
    root = tmp_path / "store"
    with live_prefect(tmp_path / "prefect-home", tmp_path / "server.log") as server:
        env = server.env
        log.info("server up after %.1f s", time.monotonic() - start)
        publish_mini_version(root)  # CURRENT for the items event, no training (< 1 s)

        # --api-url alone says where: no PREFECT_API_URL in this process's environment.
        apply = ["alerts", "apply", "--api-url", server.api_url, "--json",
                 "--alert-webhook-url", f"http://127.0.0.1:{receiver.server_port}/hook",
                 "--alert-stale-hours", str(STALE_S / 3600)]  # fmt: skip
        no_api = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        before_apply = time.time()
        first = _json(_towerflow(no_api, *apply))
        applied_at = time.time()
        assert set(first["automations"].values()) == {"created"}, first
        assert first["block"] == "custom-webhook/towerflow-alerts"

        # Side by side: a nightly that fails at the quality gate, an items event with a
        # rejected item; no nightly completes.
        gate = tmp_path / "gate.yaml"
        gate.write_text(
            "data: {scale: tiny}\ntrain: {epochs: 1}\nevaluation: {gate_min_lift: 1000}\n"
        )
        failing = _towerflow(env, "run", "--config", str(gate), "--threads", "1",
                             "--root", str(tmp_path / "gate-store"), "--json")  # fmt: skip
        items = tmp_path / "items.json"
        items.write_text(json.dumps([{"item_id": 5_000_001, "category": 1}]))
        event_id = f"alerts-{uuid.uuid4().hex[:8]}"
        adding = _towerflow(env, "add-items", str(items), "--now", "--root", str(root),
                            "--event-id", event_id)  # fmt: skip
        assert _json(adding)["rejected"] == 1
        assert _json(failing, expect_rc=5)["error"]["kind"] == "quality-gate"
        log.info("failed nightly and items event done after %.1f s", time.monotonic() - start)

        prefixes = {
            "failed": "towerflow: nightly run ",
            "rejected": "towerflow: 1 item(s) rejected",
            "stale": "towerflow: no nightly run completed",
        }
        wait_for(
            "all three alerts at the webhook",
            lambda: all(receiver.texts(p) for p in prefixes.values()),
            STALE_S + 90,
        )
        (failed_run,) = _nightly_runs(server, "FAILED")
        events = server.post("/events/filter", {"filter": {"event": {"name": [REJECTED_EVENT]}}})
        (rejection,) = events["events"]
        got = {kind: receiver.texts(prefix) for kind, prefix in prefixes.items()}

        # Applied again: nothing changes. (After the stale alert: an apply also restarts a
        # window that has fired, which would bring a second one.)
        second = _json(_towerflow(no_api, *apply))
        assert set(second["automations"].values()) == {"unchanged"}, second
        assert second["block_document_id"] == first["block_document_id"]
    report = "\n\n".join(f"--- {kind}\n{texts[0][1]}" for kind, texts in got.items())
    (tmp_path / "alerts.txt").write_text(report + "\n")
    log.info("the alerts received:\n%s", report)
    assert [len(texts) for texts in got.values()] == [1, 1, 1], got

    (failed_at, failed), (rejected_at, rejected), (stale_at, stale) = (t[0] for t in got.values())
    assert f"nightly run {failed_run['name']} failed" in failed
    assert "Reason: QualityGateError: quality gate failed: model recall@50 = " in failed
    assert "version v" in failed and "was not published and CURRENT is unchanged" in failed
    failed_delay = failed_at - _timestamp(failed_run["state"]["timestamp"])
    log.info("failure -> alert: %.2f s", failed_delay)
    assert 0 <= failed_delay < 30

    assert f"Items event {event_id} (create), flow run new-items-create-{event_id}" in rejected
    assert "1 of 1 items rejected, 0 accepted." in rejected
    assert "Reasons: missing field(s): content (1 item)" in rejected
    log.info("rejection event -> alert: %.2f s", rejected_at - _timestamp(rejection["occurred"]))

    assert f"No nightly flow run has completed in the last {STALE_S:.0f} s" in stale
    # The window started when the alerts were applied (no nightly completed since); the
    # server evaluates it every 5 s (later when the machine is busy).
    log.info("stale alert %.1f s after apply", stale_at - applied_at)
    assert before_apply + STALE_S <= stale_at <= applied_at + STALE_S + 45
