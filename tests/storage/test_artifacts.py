"""Model, index and JSON artifacts: lossless round trips, no pickle, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from storage import (
    VersionFiles,
    load_index,
    load_model,
    read_json,
    save_index,
    save_model,
    write_json,
)


def test_model_round_trip_rebuilds_identical_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    config = {"in_features": 4, "out_features": 3, "name": "tiny"}
    save_model(tmp_path, model.state_dict(), config)

    state, loaded_config = load_model(tmp_path)
    assert loaded_config == config
    assert state.keys() == model.state_dict().keys()
    rebuilt = torch.nn.Linear(loaded_config["in_features"], loaded_config["out_features"])
    rebuilt.load_state_dict(state)
    x = torch.randn(5, 4)
    assert torch.equal(rebuilt(x), model(x))
    text = (tmp_path / VersionFiles.MODEL_CONFIG).read_text()
    assert text == json.dumps(config, sort_keys=True, indent=2) + "\n"


def test_model_load_names_missing_file(tmp_path: Path) -> None:
    save_model(tmp_path, torch.nn.Linear(2, 2).state_dict(), {"d": 2})
    (tmp_path / VersionFiles.MODEL_CONFIG).unlink()
    with pytest.raises(FileNotFoundError, match=r"model files missing: model\.json"):
        load_model(tmp_path)


def test_model_save_rejects_non_tensors_and_bad_config(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"state_dict\['w'\] is list"):
        save_model(tmp_path, {"w": [1.0]}, {})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        save_model(tmp_path, {}, {"f": object()})
    assert list(tmp_path.iterdir()) == []


def test_index_round_trip_with_sparse_int64_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d = 8
    xb = rng.standard_normal((200, d), dtype=np.float32)
    ids = rng.choice(10**12, size=200, replace=False).astype(np.int64) * 3 + 2**40
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    index.add_with_ids(xb, ids)
    xq = rng.standard_normal((10, d), dtype=np.float32)
    expected_d, expected_i = index.search(xq, 5)
    assert set(expected_i.ravel()) <= set(ids)

    path = tmp_path / VersionFiles.INDEX
    save_index(path, index)
    for mmap in (False, True):
        loaded = load_index(path, mmap=mmap)
        assert loaded.ntotal == 200
        got_d, got_i = loaded.search(xq, 5)
        assert np.array_equal(got_i, expected_i) and np.array_equal(got_d, expected_d)
        assert loaded.reconstruct(int(ids[17])).tolist() == xb[17].tolist()


def test_index_load_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.faiss"):
        load_index(tmp_path / "nope.faiss")


def test_json_round_trip_and_strictness(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"b": [1, 2.5], "a": {"z": None}})
    assert read_json(path) == {"a": {"z": None}, "b": [1, 2.5]}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')  # sorted

    with pytest.raises(ValueError, match=r"metrics\.json: cannot serialise"):
        write_json(path, {"recall": math.nan})
    assert read_json(path)["b"] == [1, 2.5]  # the old file survives a failed write

    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: invalid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match=r"absent\.json"):
        read_json(tmp_path / "absent.json")
