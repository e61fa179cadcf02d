"""Monitoring through the Prefect UI, in a real browser: `towerflow serve --ui` starts a
Prefect server, a tiny nightly run reports to it, and headless Chromium shows the run as
Completed and renders its `nightly-report` artifact (heading and published version). SIGTERM
then stops the serve process and the server it started.

Needs Debian's Chromium (`make browser`, a dependency of `make test`): skipped without it on
a developer machine, a failure under CI.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from bench.live import BIN, LiveServer, served_ui
from bench.ui_screenshot import (
    CHROMIUM,
    REPORT_HEADING,
    REPORT_KEY,
    FlowRun,
    chromium_page,
    find_flow_run,
    open_flow_run,
    open_report,
    report_artifact_id,
)
from cli.prefect_server import probe_server, stop_process_group

pytestmark = pytest.mark.prefect

# Besides the report, what a nightly run shows on its Artifacts tab.
_RUN_ARTIFACTS = ("nightly-metrics", "nightly-report-file", "train-progress", "embed-progress")


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium, or a skip (a failure under CI, whose setup installs it)."""
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
    if _under_ci():
        pytest.fail(f"{reason} (CI is set, so this is not skipped)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Served:
    server: LiveServer
    process: subprocess.Popen[bytes]
    root: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`towerflow serve --ui` on a free port, with its own Prefect server."""
    work = tmp_path_factory.mktemp("ui")
    with served_ui(work / "prefect-home", work / "store", work / "serve.log") as (server, proc):
        yield Served(server, proc, work / "store")


@dataclass(frozen=True)
class Nightly:
    run: FlowRun
    version: str


@pytest.fixture(scope="module")
def nightly(served: Served) -> Nightly:
    """One tiny nightly run (in its own process) reported to the served server."""
    args = ["run", "--scale", "tiny", "--epochs", "2", "--root", str(served.root), "--json"]
    proc = subprocess.run(
        [str(BIN / "towerflow"), *args],
        env=served.server.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"towerflow run:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    version = json.loads(proc.stdout.strip().splitlines()[-1])["version"]
    return Nightly(find_flow_run(served.server.api_url), version)


@contextmanager
def _screenshot_on_failure(page: Page, path: Path, step: str) -> Iterator[None]:
    """Save what the browser showed when `step` failed, and say where."""
    try:
        yield
    except (AssertionError, PlaywrightError) as e:
        page.screenshot(path=str(path), full_page=True)
        raise AssertionError(f"{step} (url {page.url}; screenshot {path}): {e}") from e


def test_ui_shows_the_run_and_its_report(
    chromium: Path, served: Served, nightly: Nightly, tmp_path: Path
) -> None:
    run, ui_url = nightly.run, served.server.ui_url
    assert run.state == "Completed", run
    artifact_id = report_artifact_id(served.server.api_url, run.id, REPORT_KEY)
    with chromium_page(chromium) as page:
        with _screenshot_on_failure(page, tmp_path / "flow-run.png", "the flow-run page"):
            open_flow_run(page, ui_url, run)
        with _screenshot_on_failure(page, tmp_path / "artifacts.png", "the Artifacts tab"):
            page.get_by_role("tab", name="Artifacts").click()
            panel = page.get_by_role("tabpanel")
            for key in (*_RUN_ARTIFACTS, REPORT_KEY):
                expect(panel.get_by_text(key, exact=True).first).to_be_visible()
        with _screenshot_on_failure(page, tmp_path / "report.png", f"the {REPORT_KEY} artifact"):
            heading = open_report(page, REPORT_KEY, REPORT_HEADING)
            assert artifact_id in page.url, f"opened {page.url}, not artifact {artifact_id}"
            assert heading.startswith(REPORT_HEADING) and nightly.version in heading, heading
            # The plots travel inside the markdown: the browser decodes all three.
            plots = page.locator("img[src^='data:image/png']")
            expect(plots).to_have_count(3)
            sizes = plots.evaluate_all("els => els.map(e => [e.complete, e.naturalWidth])")
            assert all(done and width > 100 for done, width in sizes), sizes


def test_sigterm_stops_serve_and_the_server_it_started(served: Served) -> None:
    """Last in this module: it ends the served fixture's processes."""
    assert probe_server(served.server.ui_url) == "prefect"
    stop_process_group(served.process)
    # 0: Prefect's runner handled SIGTERM (graceful); 143 (128 + SIGTERM): it arrived before
    # the runner installed its handler, and serve's own handler exited (when the browser
    # test is skipped, this test follows the fixture within a second). Both stop the server.
    assert served.process.returncode in (0, 143)
    assert probe_server(served.server.ui_url) == "free"
