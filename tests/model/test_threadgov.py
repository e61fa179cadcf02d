"""The thread governor keeps the count that does the most work per second, follows a
change of load, backs off while nothing changes, and is off unless installed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from model.threadgov import ThreadGovernor, active, adaptive_loop, install, ladder


class World:
    """A fake clock and a machine whose seconds per unit depend on the thread count."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.now = 0.0
        self.cost = cost
        self.threads = max(cost)
        self.history: list[int] = []

    def clock(self) -> float:
        return self.now

    def set_threads(self, n: int) -> None:
        self.threads = n
        self.history.append(n)

    def run(self, gov: ThreadGovernor, steps: int, units: float = 100.0) -> list[int]:
        """``steps`` steps of ``units``; returns the count each step ran at."""
        tick = gov.start()
        seen = []
        for _ in range(steps):
            seen.append(self.threads)
            self.now += self.cost[self.threads] * units
            tick(units)
        return seen


def _governor(world: World, max_threads: int, **kw: float) -> ThreadGovernor:
    return ThreadGovernor(max_threads, world.set_threads, clock=world.clock, **kw)  # type: ignore[arg-type]


def test_ladder_halves_down_to_one() -> None:
    assert ladder(1) == (1,)
    assert ladder(2) == (2, 1)
    assert ladder(8) == (8, 4, 2, 1)
    assert ladder(6) == (6, 3, 1)
    with pytest.raises(ValueError, match="max_threads"):
        ladder(0)


def test_quiet_cores_keep_every_thread_and_probe_rarely() -> None:
    # Two threads do a step in 0.6 of one thread's time: the governor tries 1, keeps 2.
    world = World({2: 6e-5, 1: 1e-4})
    gov = _governor(world, 2)
    seen = world.run(gov, 3000)  # 3000 steps of 6 ms: 18 s
    assert gov.current == 2 and gov.switches == 0
    assert world.threads == 2
    # Probes back off 1, 2, 4, 8, 16 s: a handful in 18 s, each ~0.25 s at one thread.
    assert 3 <= gov.probes <= 7
    assert seen.count(1) <= 60 * gov.probes
    assert seen.count(1) / len(seen) < 0.1


def test_shared_cores_drop_to_one_thread_then_recover() -> None:
    world = World({2: 6e-5, 1: 1e-4})
    gov = _governor(world, 2)
    world.run(gov, 500)
    assert gov.current == 2
    # A co-tenant arrives: spinning threads make two threads 5x slower than one.
    world.cost = {2: 5e-4, 1: 1e-4}
    seen = world.run(gov, 200)
    assert gov.current == 1 and world.threads == 1
    # Found within a second of work of the change (the slowdown triggers a probe at once).
    assert seen.index(1) * 5e-4 * 100 < 1.0
    # It leaves: one thread's steps get faster, which triggers a probe of two.
    world.cost = {2: 6e-5, 1: 6e-5 / 0.6}
    seen = world.run(gov, 3000)
    assert gov.current == 2
    assert seen[-300:].count(2) >= 270  # a scheduled probe of one thread may fall here


class Machine(World):
    """A World whose other processes the governor can see: ``others`` CPUs busy."""

    def __init__(self, cost: dict[int, float], cpus: int = 2) -> None:
        super().__init__(cost)
        self.cpus, self.others = cpus, 0.0

    def load(self) -> tuple[float, float]:
        return max(self.cpus - self.threads - self.others, 0.0), self.others


def _settled_at_two(machine: Machine) -> ThreadGovernor:
    """A governor reading ``machine``'s load, after 3 s of quiet steps at two threads."""
    gov = _governor(machine, 2, load=machine.load)  # type: ignore[arg-type]
    machine.run(gov, 500)
    assert gov.current == 2
    return gov


def test_another_busy_process_is_acted_on_at_once_and_no_count_up_is_tried_meanwhile() -> None:
    machine = Machine({2: 6e-5, 1: 1e-4})
    gov = _settled_at_two(machine)
    # Two busy processes arrive, and two threads only lose 1.3x (under the 1.5x slowdown
    # that would otherwise be needed to notice): the load alone triggers the probe.
    machine.others, machine.cost = 2.0, {2: 1.3e-4, 1: 1e-4}
    seen = machine.run(gov, 400)
    # Within two windows of 0.25 s (the one under way when they came, and the next).
    assert gov.current == 1 and seen.index(1) * 1.3e-4 * 100 < 0.6
    probes = gov.probes
    seen = machine.run(gov, 5000)  # 50 s of work: no idle CPU, so two threads never tried
    assert seen.count(2) == 0 and gov.probes == probes
    # They leave: a CPU falls idle, and two threads are tried at once (waiting on busy
    # CPUs backed the scheduled probes off to 32 s), and kept after two wins.
    machine.others, machine.cost = 0.0, {2: 6e-5, 1: 1e-4}
    seen = machine.run(gov, 3000)
    assert gov.current == 2 and seen.index(2) * 1e-4 * 100 < 0.6
    assert seen[-300:].count(2) >= 270


def test_a_co_tenant_is_acted_on_at_the_next_step_however_slow_the_steps() -> None:
    """Spinning threads next to busy processes can make each step 10x slower than a
    window's time: the load is read at the first step a window's time after the last
    reading, not after a window of such steps."""
    machine = Machine({2: 6e-5, 1: 1e-4})
    gov = _settled_at_two(machine)
    machine.others, machine.cost = 2.0, {2: 3e-3, 1: 1.5e-4}  # 0.3 s per step at two
    seen = machine.run(gov, 40)
    assert seen.index(1) <= 2 and gov.current == 1


class SideBySide(Machine):
    """A Machine whose loop runs batches side by side below the ceiling: at any count the
    process fills every CPU, so no CPU is ever idle while it works, quiet or not."""

    def load(self) -> tuple[float, float]:
        return 0.0, self.others


def test_room_is_other_processes_leaving_not_only_an_idle_cpu() -> None:
    machine = SideBySide({2: 6e-5, 1: 7e-5})
    gov = _settled_at_two(machine)
    machine.others, machine.cost = 2.0, {2: 3e-4, 1: 1.2e-4}
    machine.run(gov, 400)
    assert gov.current == 1
    probes = gov.probes
    seen = machine.run(gov, 3000)  # busy: two threads never tried
    assert seen.count(2) == 0 and gov.probes == probes
    # They leave. No CPU falls idle (the batches side by side fill both), yet two threads
    # are tried at once and kept.
    machine.others, machine.cost = 0.0, {2: 6e-5, 1: 7e-5}
    seen = machine.run(gov, 3000)
    assert gov.current == 2 and seen.index(2) * 7e-5 * 100 < 0.6


def test_an_unknown_load_leaves_the_governor_as_it_was() -> None:
    """A load signal that knows nothing (not Linux, an unreadable /proc/stat) changes no
    decision: the same counts, step by step, as a governor without one."""
    runs = []
    for load in (None, lambda: None):
        machine = Machine({2: 6e-5, 1: 1e-4})
        gov = _governor(machine, 2, load=load)  # type: ignore[arg-type]
        seen = machine.run(gov, 500)
        machine.cost = {2: 5e-4, 1: 1e-4}
        seen += machine.run(gov, 2000)
        runs.append((seen, gov.probes, gov.switches))
    assert runs[0] == runs[1] and runs[0][2] >= 1


def test_small_differences_do_not_switch() -> None:
    # One thread is 5% faster: within switch_gain (10%), so the count stays.
    world = World({2: 1e-4, 1: 0.95e-4})
    gov = _governor(world, 2)
    world.run(gov, 5000)
    assert gov.current == 2 and gov.switches == 0


def test_wider_ladder_walks_to_the_best_count() -> None:
    # 8 cores, 6 busy elsewhere: two threads is the sweet spot.
    world = World({8: 9e-4, 4: 4e-4, 2: 1e-4, 1: 1.6e-4})
    gov = _governor(world, 8)
    world.run(gov, 3000)
    assert gov.current == 2
    assert set(world.history) <= {8, 4, 2, 1}


def test_a_probe_that_costs_too_much_ends_after_one_step() -> None:
    # Shared cores: a step with two spinning threads takes 20x one thread's.
    world = World({2: 2e-3, 1: 1e-4})
    gov = _governor(world, 2)
    world.run(gov, 200)
    assert gov.current == 1
    seen = world.run(gov, 5000)  # 50 s of work: probes of two threads every <= 32 s
    assert gov.current == 1 and gov.probes >= 3
    # Each probe of two threads ran one step, not a window of them.
    assert seen.count(2) <= gov.probes


def test_one_lucky_window_of_more_threads_does_not_switch_up() -> None:
    world = World({2: 2e-3, 1: 1e-4})
    gov = _governor(world, 2)
    world.run(gov, 200)
    assert gov.current == 1
    switches = gov.switches
    lucky = iter([True])  # the next probe of two threads catches a quiet moment, once

    def set_threads(n: int) -> None:
        if n == 2:
            world.cost[2] = 5e-5 if next(lucky, False) else 2e-3
        World.set_threads(world, n)

    gov.set_threads = set_threads
    world.run(gov, 3000)
    assert gov.current == 1 and gov.switches == switches


def test_single_core_budget_never_probes() -> None:
    world = World({1: 1e-4})
    gov = _governor(world, 1)
    world.run(gov, 2000)
    assert gov.probes == 0 and world.history == []


@pytest.fixture
def installed() -> Iterator[Callable[[ThreadGovernor | None], None]]:
    yield install
    install(None)


def test_adaptive_loop_is_a_no_op_without_a_governor(
    installed: Callable[[ThreadGovernor | None], None],
) -> None:
    installed(None)
    assert active() is None
    adaptive_loop()(10)  # nothing to time, nothing set
    world = World({2: 1e-4, 1: 1e-4})
    gov = _governor(world, 2)
    installed(gov)
    assert active() is gov
    assert adaptive_loop(enabled=False) is not gov.tick
    assert adaptive_loop() == gov.tick


def test_real_loops_tick_the_installed_governor(
    installed: Callable[[ThreadGovernor | None], None],
) -> None:
    """Training, embedding and full ranking each time their steps through the governor,
    which probes and sets real thread counts in between."""
    from model.embed import embed_items
    from model.metrics import full_ranking_topk
    from model.sets import CsrSets

    applied: list[int] = []
    before = torch.get_num_threads()

    def apply(n: int) -> None:
        applied.append(n)
        torch.set_num_threads(n)

    gov = ThreadGovernor(
        2, apply, window_s=0.0, window_steps=1, min_interval_s=0.0, max_interval_s=0.0
    )
    installed(gov)
    try:
        from model.config import TowerConfig, TrainConfig
        from model.dataset import Dataset, Vocabulary, temporal_split
        from model.features import category_rows
        from model.synthetic import generate, synthetic_config
        from model.train import init_model, train

        raw = generate(synthetic_config("tiny"))
        data = Dataset.from_raw(
            raw.user_id, raw.profile, raw.item_id, raw.category, raw.content,
            len(raw.category_names), raw.inter_user, raw.inter_item, raw.inter_ts,
        )  # fmt: skip
        split = temporal_split(data.inter_ts, 0.1, 0.1)
        vocab = Vocabulary.from_training(data, split.train)
        spec = vocab.tower_spec(data, TowerConfig(embedding_dim=16, id_dim=8, hidden=(16,)))
        model = init_model(spec, 0)
        users = vocab.user_id_row[data.inter_user[split.train]]
        items = vocab.item_id_row[data.inter_item[split.train]]
        cfg = TrainConfig(epochs=1, batch_size=256, seed=0, device="cpu")
        result = train(model, vocab.feature_tables(data), users, items, cfg)
        assert np.isfinite(result.final_loss)
        trained_probes = gov.probes
        assert trained_probes > 0 and set(applied) <= {1, 2}

        cats = category_rows(data.category, data.n_categories)
        vecs = embed_items(model, vocab.item_id_row, cats, data.content, batch_size=16)
        assert gov.probes > trained_probes
        embedded_probes = gov.probes

        empty = CsrSets(np.zeros(9, np.int64), np.zeros(0, np.int64))
        top = full_ranking_topk(
            lambda rows: np.tile(vecs[:5].sum(1), (len(rows), 1)),
            np.arange(8),
            5,
            empty,
            2,
            block_users=1,
        )
        assert top.shape == (8, 2) and gov.probes > embedded_probes
    finally:
        torch.set_num_threads(before)
