"""``train.world_size`` > 1: the training loop under DistributedDataParallel (gloo) in
real processes (``torch.multiprocessing.spawn``), against the same loop in one process.

With a per-example loss (BCE) and no randomness inside a step, splitting each batch over
two ranks and averaging their gradients is the same step as the whole batch in one
process, sparse ID-table gradients included: the weights must agree to float rounding.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.config import TowerConfig, TrainConfig
from model.features import FeatureTables
from model.towers import TwoTower
from model.train import train
from tests.model.test_train import build_world

TOWER = TowerConfig(embedding_dim=16, id_dim=8, category_dim=4, hidden=(32,), dropout=0.0)
# BCE (a mean of per-example terms), no ID dropout: nothing in a step depends on the rank.
BCE = TrainConfig(loss="bce", epochs=2, batch_size=512, id_dropout=0.0, seed=3, device="cpu")


def _setup() -> tuple[TwoTower, FeatureTables, np.ndarray, np.ndarray, np.ndarray]:
    """A fresh model and the tiny world's labelled impressions before validation."""
    world = build_world(TOWER)
    users, items, labels = world.impressions()
    # An even count in whole batches: every rank's half-batch has the same size, so the
    # mean of the two half-batch means is the whole batch's mean.
    n = (len(users) // BCE.batch_size) * BCE.batch_size
    return world.fresh_model(), world.tables, users[:n], items[:n], labels[:n]


def _rank(rank: int, world: int, init_file: str, out: str, cfg_json: dict[str, object]) -> None:
    """One spawned rank: join the group, train, save its weights as ``rank{r}.pt``."""
    torch.set_num_threads(1)
    # Before the group exists, as core.distributed.process_group does: imported after it,
    # torch.distributed.fsdp binds the world group as a default argument, the group's
    # gloo threads outlive destroy_process_group, and one may abort the rank at exit
    # ("terminate called without an active exception", seen in a full suite run).
    importlib.import_module("torch._dynamo")

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = TrainConfig.model_validate(cfg_json)
        model, tables, users, items, labels = _setup()
        result = train(model, tables, users, items, cfg, labels=labels)
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
        torch.save(
            {"loss": torch.tensor([e.loss for e in result.epochs])}, Path(out) / f"loss{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path: Path, cfg: TrainConfig, world: int = 2) -> list[dict[str, torch.Tensor]]:
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(
        _rank,
        args=(world, str(tmp_path / "init"), str(out), cfg.model_dump(mode="json")),
        nprocs=world,
        join=True,
    )
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_ranks_take_the_whole_batch_step_of_one_process(tmp_path: Path) -> None:
    ranks = _spawn(tmp_path, BCE.model_copy(update={"world_size": 2}))
    # DDP keeps the replicas identical: the same all-reduced gradients, the same steps.
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key
    model, tables, users, items, labels = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, tables, users, items, BCE, labels=labels)
    single = model.state_dict()
    moved = 0
    for key, value in single.items():
        # Float rounding only: the two halves' gradients are summed in another order.
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=2e-5, msg=key)
        moved += int(not torch.equal(value, before[key]))
    # The comparison means something: training moved the ID tables (sparse gradients) and
    # the dense layers away from their initial values.
    assert moved >= 4
    assert not torch.equal(
        single["item_tower.id_embedding.weight"], before["item_tower.id_embedding.weight"]
    )


def test_softmax_ranks_stay_identical_and_differ_from_one_process(tmp_path: Path) -> None:
    """In-batch softmax: each rank's negatives are its own half-batch, so the run is not
    the single-process one, but the replicas still agree bit for bit."""
    soft = TrainConfig(epochs=1, batch_size=512, seed=3, device="cpu", world_size=2)
    ranks = _spawn(tmp_path, soft)
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key


def test_world_size_without_a_process_group_is_refused() -> None:
    model, tables, users, items, labels = _setup()
    cfg = BCE.model_copy(update={"world_size": 2})
    with pytest.raises(RuntimeError, match=r"world_size=2 needs an initialised torch.distributed"):
        train(model, tables, users[:64], items[:64], cfg, labels=labels[:64])
