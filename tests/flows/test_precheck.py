"""The nightly flow and ``core.run_nightly`` check their configuration before anything
else (``core.precheck``): a bad index factory fails in seconds, before any data or
training, and the flow's report says why nothing was published."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.config import NightlyConfig
from core.nightly import run_nightly
from core.precheck import ConfigCheckError
from flows.nightly import nightly
from tests.flows.test_nightly_reports import artifacts

pytestmark = pytest.mark.prefect


def _bad_factory(root: Path) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "index": {"factory": "IVF8,Flot"},
            "runtime": {"storage_root": str(root)},
        }
    )


def test_the_flow_rejects_a_bad_index_factory_before_training(
    prefect_harness: None, tmp_path: Path
) -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigCheckError, match=r"index\.factory 'IVF8,Flot'"):
        nightly(_bad_factory(tmp_path))
    assert time.perf_counter() - start < 15  # training alone takes longer
    assert not (tmp_path / "data").exists() and not (tmp_path / "staging").exists()
    reports = [str(a.data) for a in artifacts("nightly-report")]
    assert any("ConfigCheckError" in r and "IVF8,Flot" in r for r in reports)


def test_run_nightly_rejects_it_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigCheckError, match="could not parse"):
        run_nightly(_bad_factory(tmp_path))
    assert not (tmp_path / "data").exists()
