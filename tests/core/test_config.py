"""Config presets that depend on other settings (``core.config``)."""

from __future__ import annotations

from core.config import SCALE_EPOCHS, DataConfig, NightlyConfig, load_config
from model.config import TrainConfig


def test_large_scale_trains_3_epochs_unless_told_otherwise() -> None:
    """The large world's preset (``SCALE_EPOCHS``): 3 epochs when train.epochs is not
    given, in a file, a dict or a model; an explicit value always wins; other scales and
    other sources keep the default."""
    assert SCALE_EPOCHS == {"large": 3}
    assert load_config(None, {"data.scale": "large"}).train.epochs == 3
    assert load_config(None, {"data.scale": "large", "train.epochs": 5}).train.epochs == 5
    assert load_config(None, {"data.scale": "medium"}).train.epochs == 5
    assert (
        NightlyConfig(data=DataConfig(scale="large"), train=TrainConfig(lr=0.01)).train.epochs == 3
    )
    assert (
        NightlyConfig(data=DataConfig(scale="large"), train=TrainConfig(epochs=5)).train.epochs == 5
    )
    snapshot = {"data.scale": "large", "data.source": "snapshot", "data.snapshot_id": "x"}
    assert load_config(None, snapshot).train.epochs == 5
    # A saved config (a manifest's) keeps what it says.
    saved = NightlyConfig(data=DataConfig(scale="large")).model_dump(mode="json")
    assert NightlyConfig.model_validate(saved).train.epochs == 3
    saved["train"]["epochs"] = 5
    assert NightlyConfig.model_validate(saved).train.epochs == 5
