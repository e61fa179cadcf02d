"""Synthetic interaction data with planted structure and a known true scoring function.

The generator owns the hidden world: category centroids, item latents, user preference
vectors and a Zipf popularity prior. Observable features (item category and content, user
profile) are noisy views of the hidden vectors, and interactions are drawn from
``softmax(pref . latent / temperature + log_popularity)``, so an oracle that knows the
hidden vectors ranks items optimally and a model can only approach it by learning.

Two stages with their own random streams (``numpy.random.SeedSequence`` spawn keys), so
the events can be drawn block by block on any number of machines:

- ``generate_world``: users and items, hidden and observable, O(users + items), one stream.
- ``generate_events``: the clicks and impressions of a range of user blocks, one stream per
  block of ``block_users`` users, sorted by time; ``merged_chunks`` merges any split of the
  blocks into the same time-ordered log, chunk by chunk. ``generate`` is the two in one
  process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.synthetic_config import (
    SCALES,
    ScaleName,
    SyntheticConfig,
    check_scale,
    synthetic_config,
)
from model.synthetic_events import (
    EVENT_DTYPES,
    IMPRESSION_FIELDS,
    INTERACTION_FIELDS,
    EventColumns,
    Events,
    EventTable,
    merge_events,
    merged_chunks,
    true_scores,
)

__all__ = [
    "SCALES",
    "EventTable",
    "Events",
    "ScaleName",
    "SyntheticConfig",
    "SyntheticData",
    "World",
    "check_scale",
    "event_blocks",
    "generate",
    "generate_events",
    "generate_world",
    "merge_events",
    "merged_chunks",
    "oracle_scores",
    "oracle_vectors",
    "synthetic_config",
]

log = logging.getLogger(__name__)

_START_TS = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed epoch keeps snapshots reproducible.
_WORLD_STREAM, _EVENT_STREAM = 0, 1  # first spawn-key word: which stage draws


@dataclass(frozen=True)
class World:
    """Users and items, hidden and observable: everything but the events. Rows align with
    the IDs. Shapes: U users, I items, L latent dim."""

    user_id: npt.NDArray[np.int64]  # (U,) raw user IDs 1..U
    profile: npt.NDArray[np.float32]  # (U, profile_dim)
    item_id: npt.NDArray[np.int64]  # (I,) raw item IDs, unique, non-contiguous
    category: npt.NDArray[np.int32]  # (I,) in [0, n_categories)
    content: npt.NDArray[np.float32]  # (I, content_dim)
    category_names: list[str]  # (n_categories,)
    user_latent: npt.NDArray[np.float32]  # (U, L) hidden preference
    item_latent: npt.NDArray[np.float32]  # (I, L) hidden item vector
    log_popularity: npt.NDArray[np.float32]  # (I,) hidden popularity prior
    held_back: npt.NDArray[np.bool_]  # (I,) items that exist only from the release time on
    release: int  # unix seconds from which held-back items exist


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


def _stream(cfg: SyntheticConfig, *key: int) -> np.random.Generator:
    """The random stream of one stage (and block): independent of every other one."""
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=key))


def generate_world(cfg: SyntheticConfig) -> World:
    """Draw users and items, hidden and observable (deterministic per ``cfg.seed``)."""
    rng = _stream(cfg, _WORLD_STREAM)
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

    # Sparse, shuffled item IDs: any code that confuses rows with IDs fails loudly.
    item_id = rng.choice(10 * cfg.n_items, cfg.n_items, replace=False).astype(np.int64) + 1

    # Held-back ("new") items exist only from the release time, the last
    # `new_item_window` of the timeline: events with them before it are dropped, so their
    # demand after release is the natural one (not a compressed burst).
    n_new = round(cfg.new_item_frac * cfg.n_items)
    held_back = np.zeros(cfg.n_items, bool)
    held_back[rng.choice(cfg.n_items, n_new, replace=False)] = True
    window = cfg.days * 86_400
    return World(
        user_id=np.arange(1, cfg.n_users + 1, dtype=np.int64),
        profile=profile.astype(np.float32),
        item_id=item_id,
        category=category,
        content=content.astype(np.float32),
        category_names=[f"category-{c:03d}" for c in range(cfg.n_categories)],
        user_latent=user_latent,
        item_latent=item_latent,
        log_popularity=log_pop,
        held_back=held_back,
        release=_START_TS + window - int(cfg.new_item_window * window),
    )


def event_blocks(cfg: SyntheticConfig) -> int:
    """How many user blocks (random streams) the events are drawn in."""
    return -(-cfg.n_users // cfg.block_users)


def generate_events(cfg: SyntheticConfig, world: World, blocks: range) -> Events:
    """The events of user blocks ``blocks`` (block b: users ``[b * block_users, ...)``),
    each block from its own stream; each table stably sorted by time (equal times keep
    block order), so ``merged_chunks`` can merge parts of consecutive blocks."""
    if blocks.step != 1 or blocks.start < 0 or blocks.stop > event_blocks(cfg):
        raise ValueError(f"blocks {blocks} outside 0..{event_blocks(cfg)} (step 1)")
    pop = np.exp(world.log_popularity.astype(np.float64))
    cdf = np.cumsum(pop / pop.sum())
    # Each block's events go straight into arrays sized for the expected total (grown if a
    # tail overflows them; untouched pages of a large np.empty cost no memory), so the
    # events are held once: joining a list of blocks would hold them twice, and the
    # blocks' freed memory would stay with the process.
    n_users = min(blocks.stop * cfg.block_users, cfg.n_users) - blocks.start * cfg.block_users
    per_user = max(cfg.interactions_per_user, cfg.min_per_user)
    clicks = int(1.5 * n_users * per_user) + 1024
    out = {
        names: EventColumns(cap, {n: EVENT_DTYPES[n] for n in names})
        for names, cap in (
            (INTERACTION_FIELDS, clicks),
            (IMPRESSION_FIELDS, clicks * (1 + cfg.impressions_per_click)),
        )
    }
    for b in blocks:
        ev = _block_events(cfg, world, b, cdf)
        for names, columns in out.items():
            columns.append({n: getattr(ev, n) for n in names})
    joined: dict[str, npt.NDArray[np.generic]] = {}
    for names, columns in out.items():
        arrays = columns.arrays()
        order = np.argsort(arrays[names[2]], kind="stable")
        for name in names:
            arrays[name][:] = arrays[name][order]  # one column's copy at a time
        joined.update(arrays)
    return Events(**joined)  # type: ignore[arg-type]  # the dtypes are EVENT_DTYPES


def _block_events(
    cfg: SyntheticConfig, world: World, block: int, cdf: npt.NDArray[np.float64]
) -> Events:
    """One block's clicks (Gumbel top-k from the true softmax), their times, the drops of
    held-back items and the non-clicked impressions, from the block's stream."""
    rng = _stream(cfg, _EVENT_STREAM, block)
    n_items = len(world.item_id)
    lo = block * cfg.block_users
    hi = min(lo + cfg.block_users, len(world.user_id))
    u_rows, i_rows = _sample_clicks(cfg, rng, world, lo, hi)
    window = cfg.days * 86_400
    ts = _START_TS + rng.integers(0, window, len(u_rows), dtype=np.int64)
    keep = ~(world.held_back[i_rows] & (ts < world.release))
    u_rows, i_rows, ts = u_rows[keep], i_rows[keep], ts[keep]

    # Impressions: every click plus non-clicked exposures drawn from the popularity prior
    # (inverse CDF: rng.choice(p=...) would rebuild the CDF for every block).
    neg_src = np.repeat(np.arange(len(u_rows)), cfg.impressions_per_click)
    neg_items = np.minimum(np.searchsorted(cdf, rng.random(len(neg_src))), n_items - 1)
    # A shown-but-not-clicked item must not be one the user clicks: drop those draws, so
    # pointwise training never sees contradictory labels for a (user, item) pair.
    clicked = u_rows * n_items + i_rows
    fresh = ~np.isin(u_rows[neg_src] * n_items + neg_items, clicked)
    # Nobody is shown a held-back item before it exists.
    fresh &= ~(world.held_back[neg_items] & (ts[neg_src] < world.release))
    neg_items, neg_src = neg_items[fresh], neg_src[fresh]
    user_id, item_id = world.user_id, world.item_id
    return Events(
        inter_user=user_id[u_rows],
        inter_item=item_id[i_rows],
        inter_ts=ts,
        imp_user=user_id[np.concatenate([u_rows, u_rows[neg_src]])],
        imp_item=item_id[np.concatenate([i_rows, neg_items])],
        imp_ts=np.concatenate([ts, ts[neg_src]]),
        imp_label=np.concatenate([np.ones(len(u_rows), np.int8), np.zeros(len(neg_src), np.int8)]),
    )


def _sample_clicks(
    cfg: SyntheticConfig, rng: np.random.Generator, world: World, lo: int, hi: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per user of rows ``[lo, hi)``, distinct items from softmax(true score) via Gumbel
    top-k, which equals sequential sampling without replacement from the softmax
    (Plackett-Luce), so a user never interacts with the same item twice.
    Returns (user_rows, item_rows), both (N,) int64."""
    n_items = len(world.item_id)
    n_candidates = min(n_items, cfg.candidate_cap)
    counts = np.maximum(rng.poisson(cfg.interactions_per_user, hi - lo), cfg.min_per_user)
    counts = np.minimum(counts, n_candidates).astype(np.int64)
    if n_candidates < n_items:
        # Uniform subset: the restricted softmax keeps the true relative odds.
        cand = np.sort(rng.choice(n_items, n_candidates, replace=False))
    else:
        cand = np.arange(n_items)
    scores = true_scores(
        world.user_latent[lo:hi],
        world.item_latent[cand],
        world.log_popularity[cand],
        cfg.temperature,
    )
    # Standard Gumbel noise -log(-log(u)), drawn and transformed in place in float32: a
    # 512 x 50k block costs one score-sized buffer, not float64 copies of it.
    # u = 0 (p = 2^-24 a draw) gives -inf noise: that item is simply never drawn.
    noise = rng.random(scores.shape, dtype=np.float32)
    with np.errstate(divide="ignore"):
        np.log(noise, out=noise)
        np.negative(noise, out=noise)
        np.log(noise, out=noise)
    scores -= noise
    del noise
    kmax = int(counts.max())
    n_cand = scores.shape[1]
    top = np.argpartition(scores, n_cand - kmax, axis=1)[:, n_cand - kmax :]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    keep = np.arange(kmax)[None, :] < counts[:, None]
    rows = np.broadcast_to(np.arange(lo, hi)[:, None], top.shape)
    return rows[keep].astype(np.int64), cand[top[keep]].astype(np.int64)


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Draw a full synthetic world from ``cfg`` in this process (deterministic per
    ``cfg.seed``; the same data as any split of the blocks over workers)."""
    world = generate_world(cfg)
    events = generate_events(cfg, world, range(event_blocks(cfg)))
    log.info(
        "generated %d users, %d items, %d interactions, %d impressions",
        cfg.n_users,
        cfg.n_items,
        len(events.inter_user),
        len(events.imp_user),
    )
    return SyntheticData(
        user_id=world.user_id,
        profile=world.profile,
        item_id=world.item_id,
        category=world.category,
        content=world.content,
        category_names=world.category_names,
        inter_user=events.inter_user,
        inter_item=events.inter_item,
        inter_ts=events.inter_ts,
        imp_user=events.imp_user,
        imp_item=events.imp_item,
        imp_ts=events.imp_ts,
        imp_label=events.imp_label,
        user_latent=world.user_latent,
        item_latent=world.item_latent,
        log_popularity=world.log_popularity,
        held_back=world.held_back,
    )
