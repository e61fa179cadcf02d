"""Request and response bodies of the recall API (pydantic; they generate /openapi.json).

Requests are strict: no string-to-number coercion, no NaN or infinity, no unknown fields,
every number within the range the recall core can take, so bad input is a 4xx.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.recall_answer import MAX_K

__all__ = [
    "MAX_K",
    "ErrorResponse",
    "HealthResponse",
    "RecallRequest",
    "RecallResponse",
    "RecommendedItem",
    "Rejection",
    "ValidationErrorItem",
    "ValidationErrorResponse",
    "VersionResponse",
]

_INT64 = 2**63
# Raw IDs are int64 in every table; categories int32.
UserId = Annotated[int, Field(ge=-_INT64, le=_INT64 - 1)]
CategoryId = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Categories = Annotated[list[CategoryId], Field(min_length=1, max_length=4096)]


class RecallRequest(BaseModel):
    """Who to recall for and what to return."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    user_id: UserId | None = Field(
        None,
        description="Raw user ID. Unknown users need a profile; they are embedded through "
        "the unknown-ID bucket.",
    )
    user_key: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None,
        description="Raw user ID as text (instead of user_id): the raw ID of imported data "
        "whose IDs are not integers, or the integer's digits.",
    )
    profile: Annotated[list[float], Field(max_length=4096)] | None = Field(
        None,
        description="Live profile floats (length = the version's profile size). Without a "
        "user_id the request is anonymous; with a known user_id it replaces the stored "
        "profile.",
    )
    k: int = Field(10, ge=1, le=MAX_K, description="How many items (at most the catalogue).")
    exclude_seen: bool = Field(
        True, description="Never return items in the user's stored interaction history."
    )
    include_categories: Categories | None = Field(
        None, description="Only items of these categories."
    )
    exclude_categories: Categories | None = Field(
        None, description="Never items of these categories (wins over include)."
    )

    @model_validator(mode="after")
    def _someone(self) -> RecallRequest:
        if self.user_id is not None and self.user_key is not None:
            raise ValueError("give user_id or user_key, not both")
        if self.user_id is None and self.user_key is None and self.profile is None:
            raise ValueError("give a user_id, a profile, or both (user_key for text user IDs)")
        return self


class RecommendedItem(BaseModel):
    item_id: int
    score: float = Field(
        description="Inner product of user and item vectors: their cosine, plus the item's "
        "learned offset when the model has the item-bias slot."
    )
    category: int
    raw_item_id: str | None = Field(
        None, description="The item's raw ID, for versions of data with non-integer IDs."
    )


class RecallResponse(BaseModel):
    version: str = Field(description="The published version that answered.")
    user_id: int | None
    known_user: bool = Field(description="False: embedded through the unknown-ID bucket.")
    items: list[RecommendedItem] = Field(
        description="Best first; fewer than k only when fewer items are eligible."
    )


class Rejection(BaseModel):
    version: str
    reason: str
    at: str = Field(description="ISO-8601 UTC time of the rejection.")


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"] = Field(
        description="'ok' while a version is served; 'unavailable' before the first one."
    )
    version: str | None = Field(description="The version being served.")
    reason: str | None = Field(None, description="Why nothing is served, if so.")
    current_in_store: str | None = Field(description="What CURRENT named at the last poll.")
    loaded_at: str | None = Field(description="When the served version was swapped in.")
    last_poll_at: str | None
    last_poll_error: str | None = Field(description="Why the last look at CURRENT failed.")
    last_rejection: Rejection | None = Field(
        description="The latest version that failed verification and is not served."
    )
    rejected_versions: list[str]
    swaps: int = Field(description="Versions swapped in since start.")
    deltas_applied: int = Field(
        0, description="Item deltas applied to the live index in place since start."
    )


class VersionResponse(BaseModel):
    version: str
    created_at: str | None
    item_count: int
    user_count: int
    embedding_dim: int
    profile_dim: int
    index: str = Field(description="Faiss index class.")
    loaded_at: str | None
    catalogue_seq: int | None = Field(
        None,
        description="The item catalogue position the served version includes: every "
        "items event acknowledged at or below it is served.",
    )


class ErrorResponse(BaseModel):
    detail: str = Field(description="Why the request was not answered.")


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: list[ValidationErrorItem]
