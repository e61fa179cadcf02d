"""Towers: shapes, unit outputs, the item-bias slot, the unknown row, feature scaling,
strict save/load round trips (and configs saved before the bias slot), the sparse/dense
parameter split and seeded initialisation."""

from __future__ import annotations

import json

import pytest
import torch

from model.config import TowerConfig, TowerSpec
from model.features import Standardise
from model.towers import TwoTower, load_two_tower
from model.train import init_model

SPEC = TowerSpec(
    tower=TowerConfig(embedding_dim=8, id_dim=4, category_dim=3, hidden=(16, 12)),
    n_users=5,
    n_items=7,
    n_categories=3,
    profile_dim=2,
    content_dim=3,
)
# The same model with the item-bias slot.
BIASED = SPEC.model_copy(update={"tower": SPEC.tower.model_copy(update={"item_bias": True})})


def _user_batch(gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, SPEC.n_users + 1, (b,), generator=gen)
    return rows, torch.randn(b, SPEC.profile_dim, generator=gen)


def _item_batch(gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, SPEC.n_items + 1, (b,), generator=gen)
    cats = torch.randint(0, SPEC.n_categories + 1, (b,), generator=gen)
    return rows, cats, torch.randn(b, SPEC.content_dim, generator=gen)


def _trained_like_model(seed: int = 3) -> TwoTower:
    """A model whose scaling buffers are fitted (non-default) so a round trip must carry them."""
    model = init_model(SPEC, seed)
    gen = torch.Generator().manual_seed(seed)
    model.fit_feature_scaling(
        torch.randn(20, SPEC.profile_dim, generator=gen) * 4 + 2,
        torch.randn(30, SPEC.content_dim, generator=gen) * 0.5 - 1,
    )
    return model.eval()


def test_outputs_have_shape_b_by_d_and_unit_norm() -> None:
    model = init_model(SPEC, 0).eval()
    assert not SPEC.tower.item_bias  # the default: plain unit vectors
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        users = model.forward_user(*_user_batch(gen, 11))
        items = model.forward_item(*_item_batch(gen, 13))
    assert users.shape == (11, SPEC.tower.embedding_dim)
    assert items.shape == (13, SPEC.tower.embedding_dim)
    assert users.dtype == items.dtype == torch.float32
    torch.testing.assert_close(users.norm(dim=1), torch.ones(11))
    torch.testing.assert_close(items.norm(dim=1), torch.ones(13))
    assert model.user_norm_sq == 1.0


def test_item_bias_slot_makes_the_inner_product_cosine_plus_item_offset() -> None:
    model = init_model(BIASED, 0).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Give the bias output a visible spread (a fresh layer's last output is near 0).
        model.item_tower.mlp[-1].bias[-1] = 0.7
        users = model.forward_user(*_user_batch(gen, 11))
        items = model.forward_item(*_item_batch(gen, 13))
    d = BIASED.tower.embedding_dim
    assert users.shape == (11, d) and items.shape == (13, d)
    # User: a unit vector in the first D - 1 dims and exactly 1 in the slot.
    torch.testing.assert_close(users[:, :-1].norm(dim=1), torch.ones(11))
    assert torch.equal(users[:, -1], torch.ones(11))
    torch.testing.assert_close(users.norm(dim=1) ** 2, torch.full((11,), model.user_norm_sq))
    # Item: unit in the first D - 1 dims, a free per-item offset in the slot.
    torch.testing.assert_close(items[:, :-1].norm(dim=1), torch.ones(13))
    offsets = items[:, -1]
    assert offsets.std() > 1e-3 and not torch.allclose(offsets, torch.ones(13))
    # The index's inner product = cosine of the unit parts + the item's offset.
    cosine = users[:, :-1] @ items[:, :-1].T
    torch.testing.assert_close(users @ items.T, cosine + offsets[None, :])
    # The user tower's MLP emits D - 1 dims: the slot is not a wasted learned output.
    assert model.user_tower.mlp[-1].out_features == d - 1
    assert model.item_tower.mlp[-1].out_features == d


def test_unknown_row_zero_is_a_real_row_and_tables_hold_n_plus_one_rows() -> None:
    model = init_model(SPEC, 0).eval()
    profile = torch.randn(1, SPEC.profile_dim, generator=torch.Generator().manual_seed(1))
    content = torch.randn(1, SPEC.content_dim, generator=torch.Generator().manual_seed(2))
    zero, cat0 = torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
    with torch.no_grad():
        cold_user = model.forward_user(zero, profile)
        new_item = model.forward_item(zero, cat0, content)
        # Row 0 is a distinct embedding, not an alias of a known row.
        known_user = model.forward_user(torch.ones(1, dtype=torch.int64), profile)
        # The last known rows exist ...
        model.forward_user(torch.tensor([SPEC.n_users]), profile)
        model.forward_item(torch.tensor([SPEC.n_items]), torch.tensor([SPEC.n_categories]), content)
    for vec in (cold_user, new_item):
        assert torch.isfinite(vec).all()
        torch.testing.assert_close(vec.norm(dim=1), torch.ones(1))
    assert not torch.equal(cold_user, known_user)
    # ... and one past them does not: the tables have exactly n + 1 rows.
    with pytest.raises(IndexError):
        model.forward_user(torch.tensor([SPEC.n_users + 1]), profile)
    with pytest.raises(IndexError):
        model.forward_item(torch.tensor([SPEC.n_items + 1]), cat0, content)
    with pytest.raises(IndexError):
        model.forward_item(zero, torch.tensor([SPEC.n_categories + 1]), content)


def test_standardise_fit_gives_zero_mean_unit_std_on_the_fit_data() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=gen, dtype=torch.float64).float()
    x = x * torch.tensor([10.0, 0.1, 3.0]) + torch.tensor([-5.0, 2.0, 100.0])
    norm = Standardise(3)
    torch.testing.assert_close(norm(x), x)  # unfitted: identity
    norm.fit(x)
    z = norm(x)
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=0, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)


def test_standardise_constant_column_stays_finite_and_empty_fit_is_a_no_op() -> None:
    x = torch.tensor([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]])
    norm = Standardise(2)
    norm.fit(x)
    z = norm(x)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z[:, 1], torch.zeros(3))
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    norm.fit(torch.empty(0, 2))
    for key, value in norm.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_load_two_tower_rebuilds_identical_model_through_json() -> None:
    model = _trained_like_model()
    # Through real JSON text, as the artifact store writes it (tuples become lists).
    config = json.loads(json.dumps(SPEC.model_dump(mode="json")))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = load_two_tower(config, state)
    assert not loaded.training
    assert loaded.spec == SPEC
    # The fitted (non-default) scaling travels as buffers.
    assert state["user_tower.profile_norm.mean"].abs().min() > 0
    assert not torch.equal(state["item_tower.content_norm.std"], torch.ones(SPEC.content_dim))
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded_state[key], value), key
    gen = torch.Generator().manual_seed(9)
    users, items = _user_batch(gen, 6), _item_batch(gen, 6)
    with torch.no_grad():
        assert torch.equal(loaded.forward_user(*users), model.forward_user(*users))
        assert torch.equal(loaded.forward_item(*items), model.forward_item(*items))


def test_config_saved_before_the_bias_slot_loads_as_a_model_without_it() -> None:
    old = init_model(SPEC, 4).eval()
    config = json.loads(json.dumps(SPEC.model_dump(mode="json")))
    del config["tower"]["item_bias"]  # what versions written before the field hold
    loaded = load_two_tower(config, old.state_dict())
    assert loaded.spec.tower.item_bias is False
    gen = torch.Generator().manual_seed(2)
    users = _user_batch(gen, 4)
    with torch.no_grad():
        assert torch.equal(loaded.forward_user(*users), old.forward_user(*users))
    # A bias model's weights do not fit such a config: shapes differ, strict load says so.
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_two_tower(config, init_model(BIASED, 4).state_dict())


def test_load_two_tower_is_strict() -> None:
    model = _trained_like_model()
    config = SPEC.model_dump(mode="json")
    missing = model.state_dict()
    del missing["item_tower.content_norm.mean"]
    with pytest.raises(RuntimeError, match=r"Missing key.*item_tower\.content_norm\.mean"):
        load_two_tower(config, missing)
    extra = {**model.state_dict(), "user_tower.surprise": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"Unexpected key.*user_tower\.surprise"):
        load_two_tower(config, extra)
    # A state_dict from a model with a different vocabulary size does not fit the spec.
    bigger = init_model(SPEC.model_copy(update={"n_items": SPEC.n_items + 1}), 0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_two_tower(config, bigger.state_dict())


def test_sparse_and_dense_parameters_partition_all_parameters() -> None:
    model = init_model(SPEC, 0)
    sparse = [id(p) for p in model.sparse_parameters()]
    dense = [id(p) for p in model.dense_parameters()]
    everything = [id(p) for p in model.parameters()]
    assert len(set(sparse)) == len(sparse) == 2
    assert len(set(dense)) == len(dense)
    assert not set(sparse) & set(dense)
    assert sorted(sparse + dense) == sorted(everything)
    # Exactly the ID tables are sparse (SparseAdam rejects dense gradients).
    sparse_tables = {
        id(model.user_tower.id_embedding.weight),
        id(model.item_tower.id_embedding.weight),
    }
    assert set(sparse) == sparse_tables
    assert id(model.item_tower.category_embedding.weight) in set(dense)


def test_init_model_is_deterministic_per_seed() -> None:
    a, b, c = init_model(SPEC, 7), init_model(SPEC, 7), init_model(SPEC, 8)
    state_a, state_b, state_c = a.state_dict(), b.state_dict(), c.state_dict()
    assert state_a.keys() == state_b.keys() == state_c.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    differing = [k for k in state_a if not torch.equal(state_a[k], state_c[k])]
    # Every randomly initialised tensor differs; only the scaling buffers (fixed 0/1) agree.
    assert set(state_a) - set(differing) == {
        "user_tower.profile_norm.mean",
        "user_tower.profile_norm.std",
        "item_tower.content_norm.mean",
        "item_tower.content_norm.std",
    }


def test_init_model_leaves_global_rng_untouched() -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    expected = torch.rand(5)
    torch.set_rng_state(before)
    init_model(SPEC, 0)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(5), expected)
