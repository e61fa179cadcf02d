"""The compact-items flow: fold CURRENT's chain of item deltas into one complete version,
off the events' path. Triggered by `towerflow.chain.long` (the new-items flow emits it
when CURRENT stacks `runtime.max_delta_chain` deltas), or run by hand."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from core.config import RuntimeConfig
from core.lifecycle import resolve_runtime
from tasks.steps import items_steps

__all__ = ["CompactItemsResult", "compact_items"]


class CompactItemsResult(BaseModel):
    """What one run did: CURRENT afterwards and how many deltas it folded."""

    version_id: str
    compacted: bool
    folded: int


@flow(name="compact-items", log_prints=False)
def compact_items(
    storage_root: str | None = None, min_depth: int | None = None
) -> CompactItemsResult:
    """Fold CURRENT's deltas into one complete version (a no-op when CURRENT is one).

    Args:
        storage_root: artifact store root; None = TOWERFLOW_ROOT or ./.towerflow.
        min_depth: compact only when CURRENT stacks this many deltas or more; None =
            `runtime.max_delta_chain` (what the request was made for: the requests that
            queued while an earlier run compacted the chain then cost nothing); 1 = any.

    Steps:
    1. compact-chain: the items table, embeddings and index of the whole catalogue are
       rewritten outside the publish lock while events keep publishing deltas; under
       the lock the deltas that arrived meanwhile are folded in, then a compare-and-swap.
    """
    config = RuntimeConfig(storage_root=storage_root)
    runtime = resolve_runtime(config)
    steps = items_steps(config.timeouts)
    result = steps.compact_chain(
        runtime.root,
        runtime.keep_versions,
        runtime.keep_item_versions,
        runtime.max_delta_chain if min_depth is None else min_depth,
    )
    return CompactItemsResult(
        version_id=result.version_id, compacted=result.compacted, folded=result.folded
    )
