"""``core.precheck``: what a nightly configuration is checked for before any data."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from core.config import EvalConfig, IndexConfig, NightlyConfig, TrainConfig
from core.import_config import ImportConfig
from core.precheck import (
    ConfigCheckError,
    InputFileMissingError,
    check_device,
    check_gate_metric,
    check_import_files,
    check_index_factory,
    check_root_writable,
    precheck,
)
from storage import StoreReadOnlyError


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        ("IVF256,Flot", "could not parse code description Flot"),
        ("bogus", "could not parse index string bogus"),
        ("PQ7", "should be a multiple of the number of subquantizers"),
    ],
)
def test_a_bad_index_factory_names_the_reason(factory: str, reason: str) -> None:
    with pytest.raises(ConfigCheckError) as raised:
        check_index_factory(IndexConfig(factory=factory), 64)
    message = str(raised.value)
    assert f"index.factory {factory!r}" in message and reason in message
    assert "index_factory.cpp" not in message  # Faiss's source location is left out


@pytest.mark.parametrize("factory", ["auto", "Flat", "IVF16,Flat", "IVF16,PQ8", "HNSW32"])
def test_good_factories_pass(factory: str) -> None:
    check_index_factory(IndexConfig(factory=factory), 64)


def test_gate_metric_needs_a_computed_cut_off() -> None:
    check_gate_metric(EvalConfig(gate_metric="recall@50"))
    with pytest.raises(ConfigCheckError, match=r"evaluation\.ks \[10, 50, 100\]"):
        check_gate_metric(EvalConfig(gate_metric="recall@20"))


def test_cuda_without_a_gpu() -> None:
    import torch

    check_device(TrainConfig(device="auto"))
    if torch.cuda.is_available():
        check_device(TrainConfig(device="cuda"))
    else:
        with pytest.raises(ConfigCheckError, match=r"torch\.cuda\.is_available"):
            check_device(TrainConfig(device="cuda"))


def test_import_files_must_exist(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    cfg = ImportConfig.model_validate({"interactions": {"path": str(log)}})
    with pytest.raises(InputFileMissingError, match=r"interactions\.path .* does not exist"):
        check_import_files(cfg)
    log.write_text("user_id,item_id\n1,2\n")
    check_import_files(cfg)
    assert isinstance(InputFileMissingError("x"), FileNotFoundError)


def test_root_writable_probe_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_root_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
    check_root_writable(tmp_path / "new" / "store")  # created later, by the run
    assert not (tmp_path / "new").exists()

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", refused)
    with pytest.raises(StoreReadOnlyError, match="read-only"):
        check_root_writable(tmp_path)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(StoreReadOnlyError, match="cannot create it in"):
        check_root_writable(tmp_path / "new")


def test_precheck_checks_the_whole_config(tmp_path: Path) -> None:
    precheck(NightlyConfig.model_validate({"runtime": {"storage_root": str(tmp_path)}}))
    bad = NightlyConfig.model_validate(
        {"index": {"factory": "nope"}, "runtime": {"storage_root": str(tmp_path)}}
    )
    with pytest.raises(ConfigCheckError):
        precheck(bad)
