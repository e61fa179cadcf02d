"""Check step: what a nightly configuration can be checked for before any data is read or
any model trained (``core.precheck``), so a bad value fails the run in seconds."""

from __future__ import annotations

from prefect import task

from core.config import NightlyConfig
from core.precheck import precheck

__all__ = ["check_config"]


@task(name="check-config")
def check_config(config: NightlyConfig) -> None:
    """``core.precheck.precheck``: the index factory parses, the gate metric is computed,
    the device exists, the import files are there, the store root is writable."""
    precheck(config)
