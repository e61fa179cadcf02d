"""Rerunning a failed nightly reuses the steps it finished (core.resume); steps have time
limits (runtime.timeouts); `run --snapshot ID` trains on any stored snapshot."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import core.resume
from cli.app import app
from core.config import NightlyConfig
from core.indexing import IndexRecallError
from core.lifecycle import StepTimeoutError
from flows.nightly import nightly
from storage import Layout, VersionStore, sha256_file
from storage.stepcache import ENTRY_FILE, cache_dir

pytestmark = [pytest.mark.prefect, pytest.mark.e2e]

_BAD_INDEX = {"factory": "IVF8,PQ2", "target_recall": 0.99, "k": 50}


def _config(root: Path, **sections: Any) -> NightlyConfig:
    raw: dict[str, Any] = {
        "data": {"scale": "tiny"},
        "train": {"epochs": 2},
        "runtime": {"storage_root": str(root)},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return NightlyConfig.model_validate(raw)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each step's real work ran (tasks run in this process)."""
    counter: Counter[str] = Counter()

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counter[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for name in ("train_version", "embed_version_items", "evaluate_version"):
        monkeypatch.setattr(core.resume, name, counting(name, getattr(core.resume, name)))
    return counter


def _kept(root: Path, step: str) -> Path:
    (entry,) = [p for p in (cache_dir(Layout(root)) / step).iterdir()]
    return entry


def test_a_rerun_after_a_failed_index_reuses_training_embedding_and_evaluation(
    prefect_harness: None, tmp_path: Path, calls: Counter[str]
) -> None:
    with pytest.raises(IndexRecallError):
        nightly(_config(tmp_path, index=_BAD_INDEX))
    assert VersionStore(Layout(tmp_path)).current() is None
    kept_model = json.loads((_kept(tmp_path, "train-model") / ENTRY_FILE).read_text())
    assert set(kept_model["files"]) >= {"model.pt", "model.json", "training.json"}

    version_id = nightly(_config(tmp_path))  # the index fixed: same data, model settings

    assert calls == {"train_version": 1, "embed_version_items": 1, "evaluate_version": 1}
    version = VersionStore(Layout(tmp_path)).open_version(version_id, verify=True)
    # The published weights are the failed run's, byte for byte.
    assert sha256_file(version.file("model.pt")) == kept_model["files"]["model.pt"][1]
    assert not cache_dir(Layout(tmp_path)).exists()  # a publish drops what was kept


def test_resume_off_or_another_training_setting_trains_again(
    prefect_harness: None, tmp_path: Path, calls: Counter[str]
) -> None:
    with pytest.raises(IndexRecallError):
        nightly(_config(tmp_path, index=_BAD_INDEX))
    with pytest.raises(IndexRecallError):
        nightly(_config(tmp_path, index=_BAD_INDEX, runtime={"resume": False}))
    assert calls["train_version"] == 2
    with pytest.raises(IndexRecallError):
        nightly(_config(tmp_path, index=_BAD_INDEX, train={"epochs": 3}))
    assert calls["train_version"] == 3
    # A stricter quality gate is an evaluation setting: training and embedding are reused.
    with pytest.raises(IndexRecallError):
        nightly(_config(tmp_path, index=_BAD_INDEX, evaluation={"gate_min_lift": 0.6}))
    assert calls == {"train_version": 3, "embed_version_items": 3, "evaluate_version": 4}


def test_a_damaged_kept_model_is_never_used(
    prefect_harness: None, tmp_path: Path, calls: Counter[str]
) -> None:
    with pytest.raises(IndexRecallError):
        nightly(_config(tmp_path, index=_BAD_INDEX))
    model = _kept(tmp_path, "train-model") / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x40
    model.write_bytes(bytes(data))
    version_id = nightly(_config(tmp_path))
    assert calls["train_version"] == 2  # trained again instead of loading flipped weights
    VersionStore(Layout(tmp_path)).open_version(version_id, verify=True)


def test_a_step_past_its_time_limit_fails_the_run(prefect_harness: None, tmp_path: Path) -> None:
    cfg = _config(tmp_path, runtime={"timeouts": {"train_model": 0.05}})
    with pytest.raises(StepTimeoutError, match=r"'train-model' ran past .* 0\.05 s") as e:
        nightly(cfg)
    assert e.value.setting == "train_model"
    assert VersionStore(Layout(tmp_path)).current() is None


def test_run_snapshot_trains_on_a_stored_snapshot(prefect_harness: None, tmp_path: Path) -> None:
    store = VersionStore(Layout(tmp_path))
    first = nightly(_config(tmp_path))
    snapshot_id = store.open_version(first).manifest.lineage.data_snapshot
    result = CliRunner().invoke(
        app,
        ["run", "--snapshot", snapshot_id, "--epochs", "2", "--root", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    version_id = json.loads(result.stdout.strip().splitlines()[-1])["version"]
    manifest = store.open_version(version_id).manifest
    assert manifest.lineage.data_snapshot == snapshot_id
    assert manifest.config["data"]["source"] == "snapshot"
    assert len(list(Layout(tmp_path).data_dir.iterdir())) == 1  # nothing generated again

    missing = CliRunner().invoke(app, ["run", "--snapshot", "nope", "--root", str(tmp_path)])
    assert missing.exit_code == 3, missing.output
    assert "snapshot 'nope' not found" in missing.output and snapshot_id in missing.output
