"""The synthetic world as a ``model.dataset.Dataset``, for tests that train or rank on it
(importable from processes a test spawns, which cannot share a fixture)."""

from __future__ import annotations

from typing import Any

from model.dataset import Dataset
from model.synthetic import generate, synthetic_config

__all__ = ["tiny_dataset"]


def tiny_dataset(**overrides: Any) -> Dataset:
    """The ``tiny`` synthetic world (with ``synthetic_config`` overrides) as a Dataset."""
    cfg = synthetic_config("tiny", **overrides)
    raw = generate(cfg)
    return Dataset.from_raw(
        raw.user_id, raw.profile, raw.item_id, raw.category, raw.content, cfg.n_categories,
        raw.inter_user, raw.inter_item, raw.inter_ts,
    )  # fmt: skip
