"""The synthetic world: reproducible, internally consistent, with observable features that
carry the hidden structure and an oracle that ranks far better than popularity."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest

from model.dataset import Dataset, temporal_split
from model.fullrank import evaluate_ranking
from model.synthetic import (
    SCALES,
    SyntheticConfig,
    SyntheticData,
    event_blocks,
    generate,
    generate_events,
    generate_world,
    merge_events,
    merged_chunks,
    oracle_scores,
    synthetic_config,
)
from model.synthetic_events import EventColumns, true_scores

WINDOW_START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def tiny_cfg() -> SyntheticConfig:
    return synthetic_config("tiny")


@pytest.fixture(scope="module")
def tiny(tiny_cfg: SyntheticConfig) -> SyntheticData:
    return generate(tiny_cfg)


def _arrays(data: SyntheticData) -> dict[str, npt.NDArray[np.generic]]:
    return {
        f.name: getattr(data, f.name)
        for f in dataclasses.fields(data)
        if isinstance(getattr(data, f.name), np.ndarray)
    }


def _r_squared(x: npt.NDArray[np.float32], y: npt.NDArray[np.float32]) -> float:
    """In-sample R^2 of the least-squares fit y ~ [x, 1], pooled over y's columns."""
    design = np.c_[x.astype(np.float64), np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    resid = y - design @ coef
    return float(1 - (resid**2).sum() / ((y - y.mean(axis=0)) ** 2).sum())


def test_same_config_same_world_and_seed_changes_it() -> None:
    small = synthetic_config("tiny", n_users=50, n_items=120)
    a, b = _arrays(generate(small)), _arrays(generate(small))
    c = _arrays(generate(small.model_copy(update={"seed": small.seed + 1})))
    assert a.keys() == b.keys() and len(a) == 16
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # user_id is 1..U for every seed; everything drawn at random differs.
    differing = {name for name in a if not np.array_equal(a[name], c[name])}
    assert set(a) - differing == {"user_id"}


def test_any_split_of_the_user_blocks_draws_the_same_log() -> None:
    # Each block has its own random stream: blocks drawn apart, in any order, on any
    # worker, merge into exactly the log one process draws.
    cfg = synthetic_config("tiny", n_users=70, n_items=300, block_users=16, candidate_cap=200)
    whole = generate(cfg)
    world = generate_world(cfg)
    assert event_blocks(cfg) == 5
    split = [generate_events(cfg, world, range(lo, hi)) for lo, hi in ((0, 2), (2, 3), (3, 5))]
    merged = merge_events(split)
    for name in ("inter_user", "inter_item", "inter_ts", "imp_user", "imp_item", "imp_ts"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(merged.imp_label, whole.imp_label)
    # Merged in many small windows of time: the same log, chunk after chunk.
    chunks = list(merged_chunks(split, "impressions", chunk_rows=300))
    assert len(chunks) > 5 and max(len(c["ts"]) for c in chunks) < 600
    for key, name in (("user", "imp_user"), ("item", "imp_item"), ("ts", "imp_ts")):
        joined = np.concatenate([c[key] for c in chunks])
        np.testing.assert_array_equal(joined, getattr(whole, name), err_msg=name)
    # A block's events depend on its stream, not on its neighbours: block 3 drawn alone is
    # the same rows as inside the split.
    alone = generate_events(cfg, world, range(3, 4))
    users = split[2].inter_user
    np.testing.assert_array_equal(alone.inter_item, split[2].inter_item[users <= 64])
    with pytest.raises(ValueError, match="outside"):
        generate_events(cfg, world, range(4, 6))
    with pytest.raises(ValueError, match="at least one"):
        merge_events([])


def test_ids_are_unique_and_items_are_not_contiguous(tiny: SyntheticData) -> None:
    np.testing.assert_array_equal(tiny.user_id, np.arange(1, 401))
    assert len(np.unique(tiny.item_id)) == len(tiny.item_id) == 600
    assert tiny.item_id.min() >= 1
    # Neither a range nor sorted: code that treats IDs as rows cannot pass by accident.
    assert tiny.item_id.max() > len(tiny.item_id)
    assert not np.all(np.diff(tiny.item_id) > 0)
    assert tiny.category.min() >= 0 and tiny.category.max() < 8
    assert len(tiny.category_names) == 8 == len(set(tiny.category_names))


def test_shapes_line_up(tiny: SyntheticData, tiny_cfg: SyntheticConfig) -> None:
    assert tiny.profile.shape == (400, tiny_cfg.profile_dim)
    assert tiny.content.shape == (600, tiny_cfg.content_dim)
    assert tiny.user_latent.shape == (400, tiny_cfg.latent_dim)
    assert tiny.item_latent.shape == (600, tiny_cfg.latent_dim)
    assert tiny.log_popularity.shape == (600,)
    n = len(tiny.inter_user)
    assert tiny.inter_item.shape == tiny.inter_ts.shape == (n,)
    # Mean 30 per user (Poisson, floor 5): the total lands near 400 * 30.
    assert 0.9 * 12_000 < n < 1.1 * 12_000


def test_interactions_are_distinct_per_user_and_reference_the_tables(
    tiny: SyntheticData,
) -> None:
    pairs = np.stack([tiny.inter_user, tiny.inter_item], axis=1)
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    assert np.isin(tiny.inter_user, tiny.user_id).all()
    assert np.isin(tiny.inter_item, tiny.item_id).all()
    assert np.isin(tiny.imp_user, tiny.user_id).all()
    assert np.isin(tiny.imp_item, tiny.item_id).all()
    per_user = np.bincount(tiny.inter_user, minlength=401)[1:]
    assert per_user.min() >= 5  # min_per_user


def test_timestamps_lie_in_the_window_and_are_sorted(tiny: SyntheticData) -> None:
    end = WINDOW_START + 28 * 86_400
    for ts in (tiny.inter_ts, tiny.imp_ts):
        assert ts.min() >= WINDOW_START and ts.max() < end
        assert np.all(np.diff(ts) >= 0)
    # Spread over the window, not bunched at its start.
    assert tiny.inter_ts.max() - tiny.inter_ts.min() > 27 * 86_400
    one_day = generate(synthetic_config("tiny", n_users=20, n_items=100, days=1))
    assert one_day.inter_ts.min() >= WINDOW_START
    assert one_day.inter_ts.max() < WINDOW_START + 86_400


def test_impressions_hold_every_click_and_the_configured_negatives(
    tiny: SyntheticData, tiny_cfg: SyntheticConfig
) -> None:
    n = len(tiny.inter_user)
    n_neg = int((tiny.imp_label == 0).sum())
    assert len(tiny.imp_user) == n + n_neg
    assert set(np.unique(tiny.imp_label).tolist()) == {0, 1}
    # Draws that hit one of the user's own clicks are dropped; the rest are kept.
    assert 0.8 * n * tiny_cfg.impressions_per_click < n_neg <= n * tiny_cfg.impressions_per_click
    clicks = tiny.imp_label == 1
    clicked = set(zip(tiny.inter_user.tolist(), tiny.inter_item.tolist(), strict=True))
    negatives = zip(tiny.imp_user[~clicks].tolist(), tiny.imp_item[~clicks].tolist(), strict=True)
    assert not any(pair in clicked for pair in negatives)
    imp = sorted(
        zip(tiny.imp_user[clicks], tiny.imp_item[clicks], tiny.imp_ts[clicks], strict=True)
    )
    inter = sorted(zip(tiny.inter_user, tiny.inter_item, tiny.inter_ts, strict=True))
    assert imp == inter
    # Each non-click is shown to a clicking user at one of that user's click times.
    click_times = set(zip(tiny.inter_user.tolist(), tiny.inter_ts.tolist(), strict=True))
    shown = zip(tiny.imp_user[~clicks].tolist(), tiny.imp_ts[~clicks].tolist(), strict=True)
    assert all(key in click_times for key in shown)


def test_no_impressions_when_configured_zero() -> None:
    data = generate(synthetic_config("tiny", n_users=30, n_items=100, impressions_per_click=0))
    assert len(data.imp_user) == len(data.inter_user)
    assert np.all(data.imp_label == 1)


def test_unknown_scale_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="nope") as err:
        synthetic_config("nope")
    for name in ("tiny", "small", "medium", "large"):
        assert name in str(err.value)


def test_overrides_are_validated() -> None:
    assert synthetic_config("tiny", seed=5).seed == 5
    assert synthetic_config("tiny", seed=5).n_items == SCALES["tiny"].n_items
    with pytest.raises(ValueError, match="n_items"):
        synthetic_config("tiny", n_items=1)
    with pytest.raises(ValueError, match="no_such_field"):
        synthetic_config("tiny", no_such_field=1)


def test_large_scale_is_one_million_items_and_ten_million_interactions() -> None:
    large = SCALES["large"]
    assert large.n_items == 1_000_000
    assert large.n_users == 100_000
    assert large.interactions_per_user == 100.0
    assert large.n_users * large.interactions_per_user == 10_000_000
    # At 1M items generation must go through the bounded candidate subset.
    assert large.candidate_cap < large.n_items


def test_observable_features_carry_the_hidden_vectors(tiny: SyntheticData) -> None:
    rng = np.random.default_rng(0)
    user_r2 = _r_squared(tiny.profile, tiny.user_latent)
    item_r2 = _r_squared(tiny.content, tiny.item_latent)
    # Control: the same fit on shuffled rows explains next to nothing.
    user_null = _r_squared(tiny.profile[rng.permutation(400)], tiny.user_latent)
    item_null = _r_squared(tiny.content[rng.permutation(600)], tiny.item_latent)
    # Profile (4 floats) is a noisy projection of a 16-d preference, so R^2 is partial.
    assert user_r2 > 0.2 > 0.05 > user_null
    assert item_r2 > 0.4 > 0.05 > item_null


def test_item_category_is_predictive_of_the_latent(tiny: SyntheticData) -> None:
    # Items of one category sit around one centroid: within-category spread is well
    # below the overall spread of the latents.
    total = ((tiny.item_latent - tiny.item_latent.mean(axis=0)) ** 2).sum()
    within = sum(
        ((lat - lat.mean(axis=0)) ** 2).sum()
        for c in range(8)
        if len(lat := tiny.item_latent[tiny.category == c])
    )
    assert within / total < 0.5


def test_candidate_cap_bounds_each_user_and_still_covers_the_catalogue() -> None:
    cfg = synthetic_config(
        "tiny",
        n_users=64,
        n_items=3000,
        candidate_cap=100,
        interactions_per_user=200.0,
        min_per_user=150,  # every user wants more items than the cap allows
        block_users=16,
        new_item_frac=0.0,  # held-back items would drop some of the capped interactions
    )
    data = generate(cfg)
    per_user = np.bincount(data.inter_user, minlength=65)[1:]
    np.testing.assert_array_equal(per_user, np.full(64, 100))
    pairs = np.stack([data.inter_user, data.inter_item], axis=1)
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    assert np.isin(data.inter_item, data.item_id).all()
    # Each block draws its own subset, so the catalogue reached exceeds one cap.
    assert len(np.unique(data.inter_item)) > cfg.candidate_cap


def test_candidate_cap_below_catalogue_with_uncapped_counts() -> None:
    data = generate(synthetic_config("tiny", n_users=100, n_items=3000, candidate_cap=500))
    pairs = np.stack([data.inter_user, data.inter_item], axis=1)
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    assert 0.8 * 3000 < len(pairs) < 1.2 * 3000  # Poisson(30) per user, unaffected by the cap


def test_oracle_ranks_held_out_interactions_far_better_than_popularity(
    tiny: SyntheticData, tiny_cfg: SyntheticConfig
) -> None:
    data = Dataset.from_raw(
        tiny.user_id, tiny.profile, tiny.item_id, tiny.category, tiny.content,
        tiny_cfg.n_categories, tiny.inter_user, tiny.inter_item, tiny.inter_ts,
    )  # fmt: skip
    split = temporal_split(data.inter_ts, 0.1, 0.1)
    relevant, exclude = data.sets(split.test), data.sets(~split.test)
    users = np.arange(data.n_users)
    # Dataset positions are ID-sorted; the generator's rows are not (item IDs are shuffled).
    item_row = np.argsort(tiny.item_id)
    user_latent = tiny.user_latent[np.argsort(tiny.user_id)]
    item_latent, log_pop = tiny.item_latent[item_row], tiny.log_popularity[item_row]

    def oracle(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return oracle_scores(user_latent[rows], item_latent, log_pop, tiny_cfg.temperature)

    counts = np.bincount(data.inter_item[split.train], minlength=data.n_items).astype(np.float32)

    def popularity(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return np.broadcast_to(counts, (len(rows), data.n_items))

    ks = (10, 50)
    best = evaluate_ranking(oracle, users, data.n_items, relevant, exclude, ks=ks)
    pop = evaluate_ranking(popularity, users, data.n_items, relevant, exclude, ks=ks)
    assert best["n_users"] == pop["n_users"] > 300
    assert best["recall@50"] > 2.5 * pop["recall@50"]
    assert best["ndcg@10"] > 3 * pop["ndcg@10"]
    assert best["recall@50"] > 0.6


def test_oracle_scores_are_dot_over_temperature_plus_log_popularity() -> None:
    users = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    items = np.array([[0.5, 0.5], [1.0, -1.0], [0.0, 0.0]], np.float32)
    log_pop = np.array([0.0, -1.0, -2.0], np.float32)
    # dots [[0.5, 1, 0], [1, -2, 0]] / 0.5 -> [[1, 2, 0], [2, -4, 0]], + log_pop
    expected = np.array([[1.0, 1.0, -2.0], [2.0, -5.0, -2.0]], np.float32)
    got = oracle_scores(users, items, log_pop, 0.5)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_event_columns_grow_past_their_first_capacity() -> None:
    # The generator sizes its event arrays for the expected count; a heavier tail grows them.
    cols = EventColumns(2, {"a": np.int64, "b": np.int8})
    for start in range(0, 9, 3):
        cols.append({"a": np.arange(start, start + 3), "b": np.ones(3, np.int8)})
    got = cols.arrays()
    np.testing.assert_array_equal(got["a"], np.arange(9))
    assert got["b"].dtype == np.int8 and got["b"].sum() == 9


def test_true_scores_are_the_oracle_scores_summed_in_a_fixed_order() -> None:
    rng = np.random.default_rng(1)
    users = rng.standard_normal((7, 16)).astype(np.float32)
    items = rng.standard_normal((10_000, 16)).astype(np.float32)
    log_pop = rng.standard_normal(10_000).astype(np.float32)
    got = true_scores(users, items, log_pop, 0.1)
    np.testing.assert_allclose(got, oracle_scores(users, items, log_pop, 0.1), rtol=1e-5, atol=1e-4)
    # Column chunks change nothing: each score is the same sequence of float operations.
    assert got.tobytes() == true_scores(users, items, log_pop, 0.1, chunk=333).tobytes()


def test_true_scores_do_not_depend_on_the_blas_threads() -> None:
    """A Dask worker runs BLAS on one thread; the generator's scores must not depend on
    it. OpenBLAS's sgemm does at this shape (one 512-user block of a 50k-item candidate
    set): its digests differ between 1 and 2 threads here, which flipped near-ties in the
    Gumbel top-k."""
    code = (
        "import hashlib, numpy as np\n"
        "from model.synthetic_events import true_scores\n"
        "rng = np.random.default_rng(0)\n"
        "u = rng.standard_normal((512, 16)).astype(np.float32)\n"
        "v = rng.standard_normal((50_000, 16)).astype(np.float32)\n"
        "s = true_scores(u, v, np.zeros(50_000, np.float32), 0.1)\n"
        "print(hashlib.sha256(s.tobytes()).hexdigest())\n"
    )
    digests = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1
