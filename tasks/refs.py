"""Small typed references that tasks return instead of data: where an artifact lives."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SnapshotRef", "StageRef"]


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
