"""core.memory: the sampler sees a step's own peak, not the process's life-long one."""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import pytest

from core.memory import RssSampler, rss_mib


def test_the_sampler_sees_a_transient_allocation_and_its_release() -> None:
    before = rss_mib()
    assert before is not None and before > 0
    with RssSampler(interval=0.01) as rss:
        block = np.ones(200 << 20, np.uint8)  # 200 MiB, touched
        time.sleep(0.05)
        del block
    assert rss.start_mib is not None and rss.peak_mib is not None
    assert rss.peak_mib - rss.start_mib > 150
    # A later step that allocates nothing reports about its start, not the earlier peak.
    with RssSampler(interval=0.01) as quiet:
        time.sleep(0.03)
    assert quiet.peak_mib is not None and quiet.start_mib is not None
    assert quiet.peak_mib - quiet.start_mib < 50


def test_a_step_logs_its_peak_outside_a_run_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # tasks.steps.limited logs each step's peak; without a Prefect run it uses its own
    # logger (which Prefect's logging set-up may have disabled or detached here).
    from tasks import steps

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    monkeypatch.setattr(steps.log, "disabled", False)
    monkeypatch.setattr(steps.log, "level", logging.INFO)
    steps.log.addHandler(handler)
    try:
        with RssSampler() as rss:
            pass
        steps._log_peak("train-model", rss)
    finally:
        steps.log.removeHandler(handler)
    assert any(re.search(r"train-model: peak RSS \d+ MiB in this process", m) for m in seen)
