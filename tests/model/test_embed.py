"""Batched embedding: side by side on shared cores (the thread governor under its ceiling),
inline otherwise, and the same vectors either way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from model.config import TowerConfig, TowerSpec
from model.embed import embed_items, embed_users
from model.threadgov import batch_workers, install
from model.towers import TwoTower
from model.train import init_model
from tests.model.conftest import Recording

N_ITEMS, N_USERS, CONTENT, PROFILE = 300, 200, 5, 4


@pytest.fixture
def model() -> TwoTower:
    spec = TowerSpec(
        n_users=N_USERS,
        n_items=N_ITEMS,
        n_categories=7,
        profile_dim=PROFILE,
        content_dim=CONTENT,
        tower=TowerConfig(embedding_dim=16, id_dim=8, hidden=(16,)),
    )
    return init_model(spec, 3)


@pytest.fixture
def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, N_ITEMS + 1, N_ITEMS).astype(np.int64)
    cats = rng.integers(0, 8, N_ITEMS).astype(np.int64)
    content = rng.normal(size=(N_ITEMS, CONTENT)).astype(np.float32)
    return ids, cats, content


class Spy:
    """Wraps a tower's forward: which threads ran batches, and how many at once."""

    def __init__(self, forward: Callable[..., Tensor], fail_at: int | None = None) -> None:
        self.forward, self.fail_at = forward, fail_at
        self.lock = threading.Lock()
        self.threads: list[int] = []
        self.counts: list[int] = []
        self.running = self.most = self.calls = 0

    def __call__(self, *batch: Tensor) -> Tensor:
        with self.lock:
            self.calls += 1
            call = self.calls
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.append(threading.get_ident())
            self.counts.append(torch.get_num_threads())
        try:
            time.sleep(0.003)  # long enough for batches side by side to overlap
            if call == self.fail_at:
                raise RuntimeError(f"batch {call} failed")
            return self.forward(*batch)
        finally:
            with self.lock:
                self.running -= 1


def test_no_governor_embeds_inline(model: TwoTower, inputs: tuple[np.ndarray, ...]) -> None:
    install(None)
    assert batch_workers() == 1
    spy = Spy(model.forward_item)
    model.forward_item = spy  # type: ignore[method-assign]
    embed_items(model, *inputs, batch_size=32)
    assert set(spy.threads) == {threading.get_ident()} and spy.most == 1


def test_shared_cores_run_batches_side_by_side_with_the_same_vectors(
    model: TwoTower,
    inputs: tuple[np.ndarray, ...],
    governor: Callable[[int, int], Recording],
) -> None:
    torch.set_num_threads(1)
    install(None)
    expected = embed_items(model, *inputs, batch_size=32)  # inline, one thread
    users = (np.arange(N_USERS) % (N_USERS + 1)).astype(np.int64)
    profile = np.random.default_rng(1).normal(size=(N_USERS, PROFILE)).astype(np.float32)
    expected_users = embed_users(model, users, profile, batch_size=32)

    gov = governor(4, 1)  # ceiling 4, at 1: four batches at once, one thread each
    assert batch_workers() == 4
    spy = Spy(model.forward_item)
    model.forward_item = spy  # type: ignore[method-assign]
    got = embed_items(model, *inputs, batch_size=32)
    np.testing.assert_array_equal(got, expected)  # bitwise: same batches, same count
    assert 2 <= spy.most <= 4
    assert threading.get_ident() not in spy.threads and len(set(spy.threads)) >= 2
    assert set(spy.counts) == {1}
    # The threads tick the governor themselves (the caller's thread sleeps), once per
    # round of batches, with every item once.
    assert threading.get_ident() not in {t for _, t in gov.ticks}
    assert sum(u for u, _ in gov.ticks) == N_ITEMS and len(gov.ticks) < 10
    np.testing.assert_array_equal(embed_users(model, users, profile, batch_size=32), expected_users)

    gov.pin(2)  # half the ceiling: two batches at once, two threads each
    spy2 = Spy(TwoTower.forward_item.__get__(model))
    model.forward_item = spy2  # type: ignore[method-assign]
    embed_items(model, *inputs, batch_size=32)
    assert spy2.most == 2 and set(spy2.counts) == {2}


def test_back_to_the_ceiling_mid_loop_leaves_one_thread_with_every_count(
    model: TwoTower,
    inputs: tuple[np.ndarray, ...],
    governor: Callable[[int, int], Recording],
) -> None:
    """The governor finding its ceiling faster again (the co-tenant left) stops the second
    thread at its next batch; the rest of the loop runs one batch at a time, at the
    governor's new count."""
    torch.set_num_threads(1)
    gov = governor(2, 1)
    original = gov.tick

    def tick(units: float) -> None:
        original(units)
        if len(gov.ticks) == 2:
            gov.pin(2)  # on the batch thread that ticked

    gov.tick = tick  # type: ignore[method-assign]
    spy = Spy(model.forward_item)
    model.forward_item = spy  # type: ignore[method-assign]
    embed_items(model, *inputs, batch_size=16)  # 19 batches
    assert len(set(spy.threads[:4])) == 2  # side by side first
    switched = spy.counts.index(2)
    assert 4 <= switched <= 8  # two ticks of two batches, and those then in flight
    assert len(set(spy.threads[switched + 1 :])) == 1
    assert set(spy.counts[switched:]) == {2}
    assert sum(u for u, _ in gov.ticks) == N_ITEMS
    assert threading.get_ident() not in spy.threads
    # The switch was applied on a batch thread; the caller's thread ends at it too.
    assert torch.get_num_threads() == 2


def test_a_failing_batch_raises_and_leaves_no_thread_running(
    model: TwoTower,
    inputs: tuple[np.ndarray, ...],
    governor: Callable[[int, int], Recording],
) -> None:
    governor(2, 1)
    before = threading.active_count()
    spy = Spy(model.forward_item, fail_at=4)
    model.forward_item = spy  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="batch 4 failed"):
        embed_items(model, *inputs, batch_size=16)
    calls = spy.calls
    assert spy.running == 0 and threading.active_count() == before
    assert calls < 19  # the other thread stopped at its next batch
    time.sleep(0.02)
    assert spy.calls == calls


def test_a_single_batch_runs_inline_on_shared_cores_too(
    model: TwoTower,
    inputs: tuple[np.ndarray, ...],
    governor: Callable[[int, int], Recording],
) -> None:
    """One batch cannot be spread: no thread is started for it (an items event embeds a
    few items at a time)."""
    governor(2, 1)
    spy = Spy(model.forward_item)
    model.forward_item = spy  # type: ignore[method-assign]
    embed_items(model, *inputs, batch_size=N_ITEMS)
    assert spy.threads == [threading.get_ident()]
