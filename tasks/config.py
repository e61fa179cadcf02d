"""Typed parameters of the pipeline steps, composed into the nightly flow's parameters.

These pydantic models are what Prefect validates and shows in the UI; each field has a
description. Model and training knobs live with the model (``model.config``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model.config import TowerConfig, TrainConfig
from model.synthetic import SCALES, check_scale

__all__ = ["DataConfig", "EvalConfig", "IndexConfig", "NightlyConfig", "RuntimeConfig"]


class DataConfig(BaseModel):
    """Where the training data comes from and how it is split in time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["synthetic"] = Field(
        "synthetic", description="Data source; 'synthetic' generates a world with ground truth."
    )
    scale: str = Field("small", description=f"Synthetic scale, one of {sorted(SCALES)}.")
    seed: int = Field(42, description="Generator seed (same seed + scale = same snapshot).")
    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Generator knob overrides, e.g. {'temperature': 0.2, 'popularity_skew': 1.0}.",
    )
    val_frac: float = Field(0.1, ge=0, lt=1, description="Share of the timeline for validation.")
    test_frac: float = Field(0.1, gt=0, lt=1, description="Share of the timeline for test.")

    @field_validator("scale")
    @classmethod
    def _known_scale(cls, v: str) -> str:
        return check_scale(v)


class EvalConfig(BaseModel):
    """Full-ranking evaluation and the quality gate that guards publishing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ks: tuple[int, ...] = Field((10, 50, 100), description="Cut-offs K of Recall/NDCG/HitRate@K.")
    max_users: int | None = Field(
        20_000,
        ge=1,
        description="Evaluate a seeded sample of at most this many test users (None = all).",
    )
    gate_metric: str = Field("recall@50", description="Metric the quality gate compares.")
    gate_min_lift: float = Field(
        0.2,
        description="Publish only if model >= popularity * (1 + lift) on the gate metric.",
    )
    seed: int = Field(0, description="Seed of the evaluated-user sample.")


class IndexConfig(BaseModel):
    """The Faiss index built over the item vectors and the recall it must keep."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factory: str = Field(
        "auto",
        description="faiss.index_factory string (inner product), or 'auto': exact 'Flat' up to "
        "50k items, IVF-Flat up to 5M, IVF-PQ with refinement above.",
    )
    target_recall: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Recall@k vs exact search the tuned index must reach, or nothing is published.",
    )
    k: int = Field(100, ge=1, description="k of the recall target.")
    tune_queries: int = Field(
        1000, ge=10, description="Sampled real user vectors used to tune and check recall."
    )
    seed: int = Field(0, description="Seed of the query sample and the IVF training sample.")


class RuntimeConfig(BaseModel):
    """Machine facts for this run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_root: str | None = Field(
        None, description="Artifact store root; None = TOWERFLOW_ROOT or ./.towerflow."
    )
    keep_versions: int | None = Field(
        None, ge=1, description="Published versions kept for rollback; None = env or 5."
    )
    threads: int | None = Field(
        None, ge=1, description="Threads for torch and Faiss; None = all cores."
    )


class NightlyConfig(BaseModel):
    """All parameters of one nightly run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)  # type: ignore[arg-type]
    tower: TowerConfig = Field(default_factory=TowerConfig)  # type: ignore[arg-type]
    train: TrainConfig = Field(default_factory=TrainConfig)  # type: ignore[arg-type]
    evaluation: EvalConfig = Field(default_factory=EvalConfig)  # type: ignore[arg-type]
    index: IndexConfig = Field(default_factory=IndexConfig)  # type: ignore[arg-type]
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)  # type: ignore[arg-type]
