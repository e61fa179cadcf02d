"""Machine facts for storage (where the store lives, how many versions to keep), read from
`TOWERFLOW_*` environment variables when a `StorageSettings` is created at the edge."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.layout import Layout

__all__ = ["DEFAULT_KEEP_ITEM_VERSIONS", "DEFAULT_KEEP_VERSIONS", "StorageSettings"]

# Published versions kept by pruning when nothing says otherwise (TOWERFLOW_KEEP_VERSIONS,
# `runtime.keep_versions`); the one default every `keep_versions` parameter refers to.
DEFAULT_KEEP_VERSIONS: Final = 5

# Item-event versions kept on top of CURRENT's nightly (TOWERFLOW_KEEP_ITEM_VERSIONS,
# `runtime.keep_item_versions`). Counted apart from the nightly ones: events, however
# many, never push a nightly rollback target out.
DEFAULT_KEEP_ITEM_VERSIONS: Final = 10

# Deltas CURRENT may stack on its complete version before the new-items flow asks for a
# compaction (TOWERFLOW_MAX_DELTA_CHAIN, `runtime.max_delta_chain`): each delta is one
# more small file set a loading server reads and applies.
DEFAULT_MAX_DELTA_CHAIN: Final = 32


class StorageSettings(BaseSettings):
    """Storage settings; construct in the CLI or flow entry point, then pass values down."""

    model_config = SettingsConfigDict(env_prefix="TOWERFLOW_", extra="ignore")

    root: str = Field(
        default=".towerflow",
        description=(
            "Directory holding the registry, data snapshots and model versions, or an "
            "object store (s3://BUCKET/PREFIX) whose versions this machine caches."
        ),
    )
    cache_dir: Path = Field(
        default=Path("~/.cache/towerflow"),
        description="Where a machine caches the versions of object-store roots.",
    )
    keep_versions: int = Field(
        default=DEFAULT_KEEP_VERSIONS,
        ge=1,
        description="Nightly versions kept by pruning (the current one is always kept).",
    )
    keep_item_versions: int = Field(
        default=DEFAULT_KEEP_ITEM_VERSIONS,
        ge=0,
        description="Item-event versions kept on CURRENT's lineage by pruning.",
    )

    max_delta_chain: int = Field(
        default=DEFAULT_MAX_DELTA_CHAIN,
        ge=1,
        description="Deltas on CURRENT's complete version before a compaction is asked for.",
    )

    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME]: keep the registry "
            "of a shared store in PostgreSQL (storage.database); unset: registry.sqlite."
        ),
    )

    def layout(self) -> Layout:
        """The `Layout` rooted at `root` (a local folder)."""
        return Layout(Path(self.root))
