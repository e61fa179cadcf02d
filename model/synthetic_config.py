"""The synthetic generator's knobs and the named scales (``model.synthetic`` draws the world).

``version`` names the generator's algorithm: it is part of every snapshot id (the id
hashes the whole config), so a snapshot drawn by an earlier algorithm is never mistaken
for one this code would draw.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SCALES", "ScaleName", "SyntheticConfig", "check_scale", "synthetic_config"]

ScaleName = Literal["tiny", "small", "medium", "large"]


class SyntheticConfig(BaseModel):
    """Knobs of the generator. Difficulty rises with the noise terms and the temperature."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_users: int = Field(10_000, ge=2, description="Number of users.")
    n_items: int = Field(20_000, ge=2, description="Number of items in the catalogue.")
    n_categories: int = Field(40, ge=1, description="Number of item categories.")
    interactions_per_user: float = Field(
        40.0, gt=0, description="Mean interactions per user (Poisson, at least min_per_user)."
    )
    min_per_user: int = Field(5, ge=1, description="Minimum interactions per user.")
    latent_dim: int = Field(16, ge=2, description="Dimension of the hidden latent space.")
    profile_dim: int = Field(4, ge=1, description="Observable user profile floats.")
    content_dim: int = Field(8, ge=1, description="Observable item content floats.")
    favourite_categories: int = Field(
        3, ge=1, description="Categories a user's hidden preference is built from."
    )
    user_noise: float = Field(
        0.3, ge=0, description="Spread of a user's preference around its favourite categories."
    )
    item_noise: float = Field(
        0.6, ge=0, description="Spread of an item's latent around its category centroid."
    )
    profile_noise: float = Field(
        0.3, ge=0, description="Noise on the observable user profile (vs the hidden preference)."
    )
    content_noise: float = Field(
        0.3, ge=0, description="Noise on the observable item content (vs the hidden latent)."
    )
    temperature: float = Field(
        0.1,
        gt=0,
        description="Softmax temperature of the true score: lower = sharper, more predictable.",
    )
    popularity_skew: float = Field(
        0.7,
        ge=0,
        description="Zipf exponent s of the popularity prior: log_pop = -s * log(rank).",
    )
    impressions_per_click: int = Field(
        2,
        ge=0,
        description="Non-clicked impressions drawn from popularity per click (draws that hit "
        "an item the user clicks are dropped).",
    )
    days: int = Field(28, ge=1, description="Length of the interaction window in days.")
    new_item_frac: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Share of items held back as new: they exist only in the last "
        "`new_item_window` of the timeline (earlier interactions with them are dropped), so "
        "a temporal split sees them only at test time (cold-start evaluation).",
    )
    new_item_window: float = Field(
        0.1, gt=0, le=1, description="Tail of the timeline in which held-back items appear."
    )
    candidate_cap: int = Field(
        50_000,
        ge=100,
        description=(
            "Above this many items each user block samples from a uniform random subset of "
            "this size (bounded memory at 1M items); at or below it sampling is exact."
        ),
    )
    block_users: int = Field(
        512,
        ge=1,
        description="Users per block: each block draws its events from its own random "
        "stream, so blocks run anywhere, in any order, and give the same data (memory bound).",
    )
    seed: int = Field(42, description="Seed: the same config gives the same data.")
    version: Literal[2] = Field(
        2,
        description="Generator algorithm (2: one random stream for the world, one per user "
        "block). Part of the snapshot id.",
    )


SCALES: dict[str, SyntheticConfig] = {
    # tiny holds back 5% of its items: 2% of 600 is too few new items to measure.
    "tiny": SyntheticConfig(
        n_users=400, n_items=600, n_categories=8, interactions_per_user=30.0, new_item_frac=0.05
    ),
    "small": SyntheticConfig(),
    "medium": SyntheticConfig(n_users=50_000, n_items=100_000, n_categories=100),
    "large": SyntheticConfig(
        n_users=100_000, n_items=1_000_000, n_categories=200, interactions_per_user=100.0
    ),
}


def check_scale(scale: str) -> str:
    """``scale`` if it names a scale, else ValueError listing the scales."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    return scale


def synthetic_config(scale: str, **overrides: object) -> SyntheticConfig:
    """The named scale's config with field overrides applied (validated)."""
    check_scale(scale)
    return SyntheticConfig.model_validate({**SCALES[scale].model_dump(), **overrides})
