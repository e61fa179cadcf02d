"""Small typed values that tasks return instead of data: where an artifact lives, and
summaries of what a step built."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IndexSummary", "SnapshotRef", "StageRef"]


class SnapshotRef(BaseModel):
    """A committed, immutable data snapshot."""

    model_config = ConfigDict(frozen=True)

    root: str = Field(description="Artifact store root.")
    snapshot_id: str
    n_users: int
    n_items: int
    n_interactions: int


class StageRef(BaseModel):
    """A version being built in staging, and the CURRENT it will replace (for the CAS)."""

    model_config = ConfigDict(frozen=True)

    root: str = Field(description="Artifact store root.")
    version_id: str
    parent: str | None = Field(description="CURRENT when the run started; the CAS expects it.")


class IndexSummary(BaseModel):
    """What the manifest and the run report record about the index."""

    factory: str
    n_items: int
    dim: int
    build_seconds: float
    bytes: int
    knob: str | None
    knob_value: int | None
    # Every search parameter tuning set, the knob included (nprobe, k_factor_rf, ...);
    # empty for exact search and in manifests written before it was recorded.
    params: dict[str, float] = Field(default_factory=dict)
    k: int
    target_recall: float
    recall: float
    single_query_p50_ms: float
    single_query_p99_ms: float
    tune_queries: int
    trials: list[dict[str, float]]
