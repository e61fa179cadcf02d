"""Synthetic interaction data with planted structure and a known true scoring function.

The generator owns the hidden world: category centroids, item latents, user preference
vectors and a Zipf popularity prior. Observable features (item category and content, user
profile) are noisy views of the hidden vectors, and interactions are drawn from
``softmax(pref . latent / temperature + log_popularity)``, so an oracle that knows the
hidden vectors ranks items optimally and a model can only approach it by learning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCALES",
    "ScaleName",
    "SyntheticConfig",
    "SyntheticData",
    "check_scale",
    "generate",
    "oracle_scores",
    "oracle_vectors",
    "synthetic_config",
]

log = logging.getLogger(__name__)

ScaleName = Literal["tiny", "small", "medium", "large"]

_START_TS = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed epoch keeps snapshots reproducible.


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
    block_users: int = Field(512, ge=1, description="Users generated per block (memory bound).")
    seed: int = Field(42, description="Seed: the same config gives the same data.")


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


def _hold_back(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    i_rows: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.bool_], int, npt.NDArray[np.bool_]]:
    """Pick ``new_item_frac`` of the items as new: they exist only from the release time
    (the last ``new_item_window`` of the timeline) on, so their earlier interactions are
    dropped and their demand after release is the natural one (not a compressed burst).

    Returns the (I,) new-item mask, the release time (unix seconds) and the (N,) mask of
    interactions to keep. Draws nothing when no item is held back, so such configs
    generate exactly what they did before the knob existed."""
    n_new = round(cfg.new_item_frac * cfg.n_items)
    is_new = np.zeros(cfg.n_items, bool)
    window = cfg.days * 86_400
    release = _START_TS + window - int(cfg.new_item_window * window)
    if n_new == 0:
        return is_new, release, np.ones(len(i_rows), bool)
    is_new[rng.choice(cfg.n_items, n_new, replace=False)] = True
    return is_new, release, ~(is_new[i_rows] & (ts < release))


@dataclass(frozen=True)
class SyntheticData:
    """Everything the generator emits; rows of the user/item arrays align with their IDs.

    Shapes: U users, I items, N interactions, M impressions, L latent dim.
    """

    user_id: npt.NDArray[np.int64]  # (U,) raw user IDs 1..U
    profile: npt.NDArray[np.float32]  # (U, profile_dim)
    item_id: npt.NDArray[np.int64]  # (I,) raw item IDs, unique, non-contiguous
    category: npt.NDArray[np.int32]  # (I,) in [0, n_categories)
    content: npt.NDArray[np.float32]  # (I, content_dim)
    category_names: list[str]  # (n_categories,)
    inter_user: npt.NDArray[np.int64]  # (N,) raw user IDs
    inter_item: npt.NDArray[np.int64]  # (N,) raw item IDs
    inter_ts: npt.NDArray[np.int64]  # (N,) unix seconds
    imp_user: npt.NDArray[np.int64]  # (M,)
    imp_item: npt.NDArray[np.int64]  # (M,)
    imp_ts: npt.NDArray[np.int64]  # (M,)
    imp_label: npt.NDArray[np.int8]  # (M,) 1 click, 0 shown but not clicked
    user_latent: npt.NDArray[np.float32]  # (U, L) hidden preference
    item_latent: npt.NDArray[np.float32]  # (I, L) hidden item vector
    log_popularity: npt.NDArray[np.float32]  # (I,) hidden popularity prior
    held_back: npt.NDArray[np.bool_]  # (I,) items that exist only from the release time on


def _normalise(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)).astype(np.float32)


def oracle_scores(
    user_latent: npt.NDArray[np.float32],
    item_latent: npt.NDArray[np.float32],
    log_popularity: npt.NDArray[np.float32],
    temperature: float,
) -> npt.NDArray[np.float32]:
    """True log-odds (up to a per-user constant) that each user picks each item.

    Args:
        user_latent: (B, L) hidden preferences. item_latent: (I, L). log_popularity: (I,).
    Returns:
        (B, I) float32 scores; ranking by them is the generator's optimal ranking.
    """
    scores = user_latent @ item_latent.T
    scores /= np.float32(temperature)
    scores += log_popularity[None, :]
    return scores.astype(np.float32, copy=False)


def oracle_vectors(
    user_latent: npt.NDArray[np.float32],
    item_latent: npt.NDArray[np.float32],
    log_popularity: npt.NDArray[np.float32],
    temperature: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``oracle_scores`` as inner products, so exact inner-product search can rank them:
    users `(U, L + 1)` = [latent / temperature, 1], items `(I, L + 1)` = [latent, log
    popularity]; user u . item i = u.i / temperature + log_pop[i] (float32 rounding apart)."""
    users = np.empty((len(user_latent), user_latent.shape[1] + 1), np.float32)
    users[:, :-1] = user_latent / np.float32(temperature)
    users[:, -1] = 1.0
    items = np.empty((len(item_latent), item_latent.shape[1] + 1), np.float32)
    items[:, :-1] = item_latent
    items[:, -1] = log_popularity
    return users, items


def _sample_interactions(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    user_latent: npt.NDArray[np.float32],
    item_latent: npt.NDArray[np.float32],
    log_pop: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per user, draw distinct items from softmax(true score) via Gumbel top-k.

    Gumbel top-k equals sequential sampling without replacement from the softmax
    (Plackett-Luce), so a user never interacts with the same item twice.
    Returns (user_rows, item_rows), both (N,) int64.
    """
    n_users, n_items = len(user_latent), len(item_latent)
    counts = np.maximum(rng.poisson(cfg.interactions_per_user, n_users), cfg.min_per_user)
    n_candidates = min(n_items, cfg.candidate_cap)
    counts = np.minimum(counts, n_candidates).astype(np.int64)
    users_out: list[npt.NDArray[np.int64]] = []
    items_out: list[npt.NDArray[np.int64]] = []
    for start in range(0, n_users, cfg.block_users):
        stop = min(start + cfg.block_users, n_users)
        if n_candidates < n_items:
            # Uniform subset: the restricted softmax keeps the true relative odds.
            cand = np.sort(rng.choice(n_items, n_candidates, replace=False))
        else:
            cand = np.arange(n_items)
        scores = oracle_scores(
            user_latent[start:stop], item_latent[cand], log_pop[cand], cfg.temperature
        )
        scores += rng.gumbel(size=scores.shape).astype(np.float32)
        block_counts = counts[start:stop]
        kmax = int(block_counts.max())
        top = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        keep = np.arange(kmax)[None, :] < block_counts[:, None]
        rows = np.broadcast_to(np.arange(start, stop)[:, None], top.shape)
        users_out.append(rows[keep].astype(np.int64))
        items_out.append(cand[top[keep]].astype(np.int64))
    return np.concatenate(users_out), np.concatenate(items_out)


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Draw a full synthetic world from ``cfg`` (deterministic per ``cfg.seed``)."""
    rng = np.random.default_rng(cfg.seed)
    dim = cfg.latent_dim
    scale = 1.0 / np.sqrt(dim)

    centroids = _normalise(rng.standard_normal((cfg.n_categories, dim)).astype(np.float32))
    category = rng.integers(0, cfg.n_categories, cfg.n_items).astype(np.int32)
    item_latent = _normalise(
        centroids[category]
        + cfg.item_noise * scale * rng.standard_normal((cfg.n_items, dim)).astype(np.float32)
    )
    content_map = rng.standard_normal((dim, cfg.content_dim)).astype(np.float32)
    content = item_latent @ content_map + cfg.content_noise * rng.standard_normal(
        (cfg.n_items, cfg.content_dim)
    ).astype(np.float32)

    # Zipf prior on a random permutation of ranks, so popularity is unrelated to ID order.
    ranks = rng.permutation(cfg.n_items).astype(np.float64) + 1.0
    log_pop = (-cfg.popularity_skew * np.log(ranks)).astype(np.float32)

    n_fav = min(cfg.favourite_categories, cfg.n_categories)
    fav = np.argsort(rng.random((cfg.n_users, cfg.n_categories)), axis=1)[:, :n_fav]
    weights = rng.dirichlet(np.ones(n_fav), cfg.n_users).astype(np.float32)
    user_latent = _normalise(
        np.einsum("uf,ufd->ud", weights, centroids[fav])
        + cfg.user_noise * scale * rng.standard_normal((cfg.n_users, dim)).astype(np.float32)
    )
    profile_map = rng.standard_normal((dim, cfg.profile_dim)).astype(np.float32)
    profile = user_latent @ profile_map + cfg.profile_noise * rng.standard_normal(
        (cfg.n_users, cfg.profile_dim)
    ).astype(np.float32)

    user_id = np.arange(1, cfg.n_users + 1, dtype=np.int64)
    # Sparse, shuffled item IDs: any code that confuses rows with IDs fails loudly.
    item_id = rng.choice(10 * cfg.n_items, cfg.n_items, replace=False).astype(np.int64) + 1

    u_rows, i_rows = _sample_interactions(cfg, rng, user_latent, item_latent, log_pop)
    window = cfg.days * 86_400
    ts = _START_TS + rng.integers(0, window, len(u_rows), dtype=np.int64)
    is_new, release, keep = _hold_back(cfg, rng, i_rows, ts)
    u_rows, i_rows, ts = u_rows[keep], i_rows[keep], ts[keep]
    order = np.argsort(ts, kind="stable")
    u_rows, i_rows, ts = u_rows[order], i_rows[order], ts[order]

    # Impressions: every click plus non-clicked exposures drawn from the popularity prior.
    n_neg = len(u_rows) * cfg.impressions_per_click
    pop = np.exp(log_pop.astype(np.float64))
    neg_items = rng.choice(cfg.n_items, n_neg, p=pop / pop.sum())
    neg_src = np.repeat(np.arange(len(u_rows)), cfg.impressions_per_click)
    # A shown-but-not-clicked item must not be one the user clicks: drop those draws, so
    # pointwise training never sees contradictory labels for a (user, item) pair.
    clicked = u_rows * cfg.n_items + i_rows
    fresh = ~np.isin(u_rows[neg_src] * cfg.n_items + neg_items, clicked)
    # Nobody is shown a held-back item before it exists.
    fresh &= ~(is_new[neg_items] & (ts[neg_src] < release))
    neg_items, neg_src = neg_items[fresh], neg_src[fresh]
    n_neg = len(neg_items)
    imp_user = np.concatenate([u_rows, u_rows[neg_src]])
    imp_item = np.concatenate([i_rows, neg_items])
    imp_ts = np.concatenate([ts, ts[neg_src]])
    imp_label = np.concatenate([np.ones(len(u_rows), np.int8), np.zeros(n_neg, np.int8)])
    imp_order = np.argsort(imp_ts, kind="stable")

    log.info(
        "generated %d users, %d items, %d interactions, %d impressions",
        cfg.n_users,
        cfg.n_items,
        len(u_rows),
        len(imp_user),
    )
    return SyntheticData(
        user_id=user_id,
        profile=profile.astype(np.float32),
        item_id=item_id,
        category=category,
        content=content.astype(np.float32),
        category_names=[f"category-{c:03d}" for c in range(cfg.n_categories)],
        inter_user=user_id[u_rows],
        inter_item=item_id[i_rows],
        inter_ts=ts,
        imp_user=user_id[imp_user[imp_order]],
        imp_item=item_id[imp_item[imp_order]],
        imp_ts=imp_ts[imp_order],
        imp_label=imp_label[imp_order],
        user_latent=user_latent,
        item_latent=item_latent,
        log_popularity=log_pop,
        held_back=is_new,
    )
