"""The recall answer as JSON-ready data: one shape for ``POST /v1/recall`` and
``towerflow recommend --json``, so the two can be compared item for item."""

from __future__ import annotations

from typing import Any, Final

from core.recall import Recaller
from core.recall_types import RecallResult

__all__ = ["MAX_K", "answer"]

# The largest k a request may ask for (the API's schema, the CLI's option); the catalogue
# size is the other bound, checked by Recaller.recall.
MAX_K: Final = 1000


def answer(recaller: Recaller, result: RecallResult, user_id: int | None) -> dict[str, Any]:
    """``{"version", "user_id", "known_user", "items": [{"item_id", "score", "category"}
    (+ "raw_item_id" for versions with text IDs)]}``, items best first; the shape of
    ``service.schemas.RecallResponse``."""
    items: list[dict[str, Any]] = [
        {"item_id": i, "score": sc, "category": c}
        for i, sc, c in zip(
            result.item_ids.tolist(),
            result.scores.tolist(),
            result.categories.tolist(),
            strict=True,
        )
    ]
    if recaller.raw_ids is not None:
        for item, raw in zip(items, recaller.raw_ids.items(result.item_ids), strict=True):
            item["raw_item_id"] = raw
    return {
        "version": result.version_id,
        "user_id": user_id,
        "known_user": result.known_user,
        "items": items,
    }
