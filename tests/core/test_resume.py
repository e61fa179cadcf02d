"""Keys of resumable steps (core.resume): what changes a step's result changes its key,
nothing else does."""

from __future__ import annotations

from core.config import DataConfig, EvalConfig
from core.refs import SnapshotRef
from core.resume import code_version, split_settings, train_key
from model.config import TowerConfig, TrainConfig


def _snapshot(snapshot_id: str = "synthetic-tiny-seed42-abc") -> SnapshotRef:
    return SnapshotRef(root="/r", snapshot_id=snapshot_id, n_users=1, n_items=1, n_interactions=1)


def _key(**changes: object) -> str:
    data = changes.pop("data", DataConfig(scale="tiny"))
    tower = changes.pop("tower", TowerConfig())
    train = changes.pop("train", TrainConfig())
    evaluation = changes.pop("evaluation", EvalConfig())
    snapshot = changes.pop("snapshot", _snapshot())
    assert not changes
    return train_key(snapshot, data, tower, train, evaluation)  # type: ignore[arg-type]


def test_code_version_is_a_stable_digest() -> None:
    assert code_version() == code_version()
    assert len(code_version()) == 16 and int(code_version(), 16) >= 0


def test_training_key_follows_what_training_reads() -> None:
    base = _key()
    assert _key() == base
    assert _key(snapshot=_snapshot("import-x")) != base
    assert _key(train=TrainConfig(epochs=7)) != base
    assert _key(tower=TowerConfig(embedding_dim=16)) != base
    assert _key(data=DataConfig(scale="tiny", protocol="leave_one_out")) != base
    # Early stopping reads the validation metric.
    assert _key(evaluation=EvalConfig(validation_metric="ndcg@10")) != base


def test_training_key_ignores_what_training_does_not_read() -> None:
    base = _key()
    assert _key(evaluation=EvalConfig(gate_min_lift=3.0, ks=(5, 20))) == base
    # Where the snapshot came from is named by its id, not by the data source settings.
    assert _key(data=DataConfig(source="snapshot", snapshot_id="synthetic-tiny-seed42-abc")) == base


def test_split_settings_are_only_the_split() -> None:
    assert set(split_settings(DataConfig())) == {
        "protocol",
        "val_frac",
        "test_frac",
        "ratios",
        "split_seed",
    }
