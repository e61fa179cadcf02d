"""The Prefect UI of a nightly run in headless Chromium: open the flow-run page and its report
artifact, check what they show, and save screenshots (the README's Monitoring pictures).

Debian's Chromium (/usr/bin/chromium, installed by `make browser`) driven by Playwright; a
browser download (`playwright install`) is never needed. The tests/ui test uses the same
helpers.

    python -m bench.ui_screenshot --url http://127.0.0.1:4200 [--flow-run ID] [--out-dir docs]

Without --flow-run, the latest completed `nightly` run is shown.
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from playwright.sync_api import Page, expect, sync_playwright

__all__ = [
    "CHROMIUM",
    "REPORT_KEY",
    "FlowRun",
    "chromium_page",
    "find_flow_run",
    "open_flow_run",
    "open_report",
    "report_artifact_id",
    "screenshot_run",
]

logger = logging.getLogger(__name__)

CHROMIUM: Final = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox (it refuses to run as root otherwise), no GPU,
# and none of the background connections that this machine's network refuses by the dozen.
CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT: Final = {"width": 1400, "height": 900}
# Prefect 3.9's default UI lives under /v2 (`/` redirects there); its classic UI answers at
# the same paths without the prefix.
UI_PREFIX: Final = "/v2"
REPORT_KEY: Final = "nightly-report"
REPORT_HEADING: Final = "Nightly run"
TIMEOUT_MS: Final = 30_000


@dataclass(frozen=True)
class FlowRun:
    """What the UI should show of one flow run."""

    id: str
    name: str
    state: str  # the state's display name, e.g. "Completed"


def _post(api_url: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{api_url}{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def find_flow_run(api_url: str, run_id: str | None = None, flow: str = "nightly") -> FlowRun:
    """The flow run `run_id`, or the latest completed run of `flow` (REST API)."""
    if run_id:
        body: dict[str, Any] = {"flow_runs": {"id": {"any_": [run_id]}}}
    else:
        body = {
            "flows": {"name": {"any_": [flow]}},
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            "sort": "START_TIME_DESC",
            "limit": 1,
        }
    runs = _post(api_url, "/flow_runs/filter", body)
    if not runs:
        raise LookupError(f"no flow run {run_id or f'of {flow!r} completed'} at {api_url}")
    run = runs[0]
    return FlowRun(id=run["id"], name=run["name"], state=run["state_name"])


def report_artifact_id(api_url: str, run_id: str, key: str = REPORT_KEY) -> str:
    """The id of the `key` artifact the flow run created."""
    body = {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run_id]}}}
    found = _post(api_url, "/artifacts/filter", body)
    if not found:
        raise LookupError(f"flow run {run_id} has no {key!r} artifact")
    return str(found[0]["id"])


@contextmanager
def chromium_page(
    executable: Path = CHROMIUM, viewport: dict[str, int] = VIEWPORT
) -> Iterator[Page]:
    """A page of a headless Chromium with a fresh profile, closed on exit."""
    with (
        tempfile.TemporaryDirectory(prefix="towerflow-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(executable),
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport={"width": viewport["width"], "height": viewport["height"]},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            context.close()


def open_flow_run(page: Page, ui_url: str, run: FlowRun) -> None:
    """Open the run's page; return once it shows the run's name and state badge."""
    page.goto(f"{ui_url}{UI_PREFIX}/runs/flow-run/{run.id}")
    expect(page.get_by_text(run.name, exact=True).first).to_be_visible()
    # Exact text: the badge, not the "Finished in state Completed()" log lines.
    expect(page.get_by_text(run.state, exact=True).first).to_be_visible()


def open_report(page: Page, key: str = REPORT_KEY, heading: str = REPORT_HEADING) -> str:
    """From an open flow-run page: the Artifacts tab, then the `key` artifact's card; return
    the text of the rendered markdown's first heading once it shows."""
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_role("tabpanel").get_by_text(key, exact=True).click()
    title = page.get_by_role("heading", name=re.compile(re.escape(heading))).first
    expect(title).to_be_visible()
    return title.inner_text()


def wait_until_still(page: Page, timeout_s: float = 15.0, every_s: float = 0.5) -> None:
    """Return once two screenshots in a row are the same: the canvas graph and the charts
    draw after the page's text is there, and no DOM event says when they are done."""
    deadline = time.monotonic() + timeout_s
    last = page.screenshot()
    while time.monotonic() < deadline:
        page.wait_for_timeout(every_s * 1000)
        shot = page.screenshot()
        if shot == last:
            return
        last = shot
    logger.warning("the page still changed after %.0f s; taking the screenshot anyway", timeout_s)


def screenshot_run(ui_url: str, run: FlowRun, out_run: Path, out_report: Path) -> str:
    """Screenshots of the run's page and of its report artifact; returns the report's heading."""
    out_run.parent.mkdir(parents=True, exist_ok=True)
    out_report.parent.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        open_flow_run(page, ui_url, run)
        wait_until_still(page)
        page.screenshot(path=str(out_run))
        heading = open_report(page)
        wait_until_still(page)
        page.screenshot(path=str(out_report))
    logger.info("saved %s and %s", out_run, out_report)
    return heading


def main(argv: list[str] | None = None) -> None:
    """Command line: screenshots of a run on a running server."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:4200", help="the server's UI URL")
    parser.add_argument("--flow-run", help="flow run id [default: the latest completed nightly]")
    parser.add_argument("--out-dir", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ui_url = args.url.rstrip("/").removesuffix("/api")
    run = find_flow_run(f"{ui_url}/api", args.flow_run)
    heading = screenshot_run(
        ui_url,
        run,
        args.out_dir / "monitoring-run.png",
        args.out_dir / "monitoring-report.png",
    )
    logger.info("run %s (%s): report %r", run.name, run.state, heading)


if __name__ == "__main__":
    main()
