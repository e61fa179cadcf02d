"""towerflow's application layer and its Python API: the functions the Prefect tasks, the
CLI and the HTTP service call, usable without any of them (no Prefect, typer or FastAPI).

    from core import NightlyConfig, Recaller, open_store, run_nightly

    version = run_nightly(NightlyConfig.model_validate({"data": {"scale": "tiny"}}))
    recaller = Recaller.load(open_store())
    top = recaller.recall(user_id=1, k=10)

The names below load on first use, so importing ``core`` (e.g. for its config models)
does not load torch or Faiss.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.ablation import ladder, render_table, run_ablation
    from core.config import NightlyConfig, load_config
    from core.import_config import ImportConfig
    from core.importing import import_log
    from core.items import apply_items
    from core.items_validation import ItemsBatch
    from core.nightly import run_nightly
    from core.recall import Recaller
    from core.store import open_store
    from core.tuning import TuneBudget, run_tuning

__all__ = [
    "ImportConfig",
    "ItemsBatch",
    "NightlyConfig",
    "Recaller",
    "TuneBudget",
    "apply_items",
    "import_log",
    "ladder",
    "load_config",
    "open_store",
    "render_table",
    "run_ablation",
    "run_nightly",
    "run_tuning",
]

# public name -> the core module that defines it
_HOME: dict[str, str] = {
    "ImportConfig": "core.import_config",
    "ItemsBatch": "core.items_validation",
    "NightlyConfig": "core.config",
    "Recaller": "core.recall",
    "TuneBudget": "core.tuning",
    "apply_items": "core.items",
    "import_log": "core.importing",
    "ladder": "core.ablation",
    "load_config": "core.config",
    "open_store": "core.store",
    "render_table": "core.ablation",
    "run_ablation": "core.ablation",
    "run_nightly": "core.nightly",
    "run_tuning": "core.tuning",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
