"""The kill loop: SIGKILL items events (deltas), compactions of their chain and nightly
runs at random moments, and after each
kill check that CURRENT is valid; after every successful run check that every
acknowledged item is served exactly once and that no dead run's leftovers remain.

Each operation runs in a child process (``bench.kill_child``) that says ``READY`` when
its imports are done and ``PUBLISH`` when its publishing part begins. 10% of the kills
come right after ``READY``, 60% after a delay uniform over the operation's typical
duration (the median of its runs without a kill so far; the first is run for that), 30%
after ``PUBLISH``, uniform over the typical duration of that part (a nightly spends only
its last few percent publishing: uniform kills would rarely land there). An items event
killed before its ``ACK`` line is redelivered with the same event id (at-least-once
delivery); every ``check_every`` kills and at the end one items event and one nightly
run finish without a kill.

Usage: python -m bench.kill_loop --kills 100 [--seed N] [--items-share 0.7]
[--compact-share 0] [--update-share 0] [--index auto] [--check-every 10] [--root DIR]
(see docs/kill-loop.md)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import numpy as np

from bench.kill_checks import check_store, disk_phase, known_versions, leftovers, served
from storage import CatalogueLog, Layout

__all__ = [
    "FIRST_ITEM_ID",
    "ITEMS_PER_EVENT",
    "KillLoopResult",
    "main",
    "render",
    "run_kill_loop",
]

log = logging.getLogger("bench.kill_loop")

REPO: Final = Path(__file__).resolve().parents[1]
FIRST_ITEM_ID: Final = 10_000_000  # far above the tiny world's item IDs
ITEMS_PER_EVENT: Final = 3
_READY_TIMEOUT_S: Final = 120.0
_RUN_TIMEOUT_S: Final = 300.0
_MAX_VIOLATIONS: Final = 10


@dataclass
class KillLoopResult:
    """What the loop did and found; `violations` empty means every invariant held."""

    root: Path
    kills: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, phase) -> n
    moments: Counter[str] = field(default_factory=Counter)  # start/uniform/publish -> kills
    finished: Counter[str] = field(default_factory=Counter)  # kind -> runs not killed
    store_checks: int = 0  # CURRENT + registered versions, after every child
    run_checks: int = 0  # served exactly once + no leftovers, after every successful run
    acked: set[int] = field(default_factory=set)  # acknowledged item ids
    acked_events: int = 0
    updates: int = 0  # acknowledged events that gave held items new content
    most_fresh: int = 0  # the most items served through fresh vectors at a run check
    redelivered: int = 0
    lost: int = 0
    duplicated: int = 0
    left_by_kills: int = 0  # leftovers seen before a successful run removed them
    left_after_run: int = 0  # leftovers seen after a successful run
    # kind -> (seconds from READY, from PUBLISH) to the end of each run without a kill
    durations: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    wall_s: float = 0.0


@dataclass
class _Child:
    """One running ``bench.kill_child``; threads collect its stdout lines and the tail
    of its stderr."""

    kind: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    _said: threading.Condition = field(default_factory=threading.Condition)
    _eof: bool = False

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self.errors.extend, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            with self._said:
                self.lines.append(line.strip())
                self._said.notify_all()
        with self._said:
            self._eof = True
            self._said.notify_all()

    def wait_for(self, word: str, timeout_s: float) -> bool:
        """Wait until the child has said ``word``; False if it closed stdout first."""
        with self._said:
            self._said.wait_for(lambda: bool(self.said(word)) or self._eof, timeout_s)
            return bool(self.said(word))

    def finish(self, timeout_s: float) -> int:
        """Wait for the exit (reaping it, so its pid is dead); returns the exit status."""
        code = self.proc.wait(timeout_s)
        for reader in self._readers:
            reader.join(timeout_s)
        return code

    def said(self, word: str) -> list[str]:
        return [line for line in self.lines if line.split(" ", 1)[0] == word]

    def stderr_tail(self) -> str:
        return "".join(self.errors)


class _Loop:
    """The loop's state: the store, the event counter, what was acknowledged."""

    def __init__(
        self,
        root: Path,
        seed: int,
        items_share: float,
        compact_share: float = 0.0,
        update_share: float = 0.0,
        factory: str = "auto",
    ) -> None:
        self.layout = Layout(root)
        self.rng = np.random.default_rng(seed)
        self.items_share, self.compact_share = items_share, compact_share
        self.update_share, self.factory = update_share, factory
        self.result = KillLoopResult(root=root)
        self.n_events = 0
        # The unacknowledged event to redeliver: (event id, first item ID, content salt).
        self.pending: tuple[str, int, int] | None = None
        self.firsts: list[int] = []  # first item ID of each acknowledged creation
        self.reported: set[Path] = set()  # leftovers already reported as violations

    def _start(self, kind: str) -> _Child:
        root = str(self.layout.root)
        args = [kind, root]
        if kind == "items":
            if self.pending is None:
                self.n_events += 1
                if self.firsts and self.rng.random() < self.update_share:
                    # New content for an earlier event's items: an update of held items.
                    first = self.firsts[int(self.rng.integers(len(self.firsts)))]
                    salt = self.n_events
                else:
                    first, salt = FIRST_ITEM_ID + self.n_events * ITEMS_PER_EVENT, 0
                self.pending = (f"kill-loop-{self.n_events}", first, salt)
            else:
                self.result.redelivered += 1
            event_id, first, salt = self.pending
            args += [event_id, str(first), str(ITEMS_PER_EVENT), str(salt)]
        elif kind == "nightly":
            args += ["1", self.factory]
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.kill_child", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return _Child(kind, proc)

    def _collect_acks(self, child: _Child) -> bool:
        for line in child.said("ACK"):
            _, event_id, ids = line.split(" ", 2)
            assert self.pending is not None and event_id == self.pending[0], line
            self.result.acked.update(int(i) for i in ids.split(","))
            self.result.acked_events += 1
            if self.pending[2]:
                self.result.updates += 1
            else:
                self.firsts.append(self.pending[1])
            self.pending = None
        return bool(child.said("ACK"))

    def _violation(self, message: str) -> None:
        log.error("VIOLATION: %s", message)
        self.result.violations.append(message)
        if len(self.result.violations) >= _MAX_VIOLATIONS:
            raise RuntimeError(f"stopping after {_MAX_VIOLATIONS} violations")

    def _check_store(self) -> None:
        problems = check_store(self.layout)
        for p in problems:
            self._violation(p)
        self.result.store_checks += not problems

    @contextmanager
    def _running(self, kind: str) -> Iterator[_Child]:
        """A started child, killed and reaped if the block fails (or is interrupted)."""
        child = self._start(kind)
        try:
            yield child
        finally:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()

    def run_ok(self, kind: str, *, timed: bool = True) -> None:
        """Run one operation to the end (no kill), then check everything; ``timed``: its
        duration counts towards the typical one."""
        found = leftovers(self.layout)
        self.result.left_by_kills += len(found)
        with self._running(kind) as child:
            code = child.finish(_RUN_TIMEOUT_S)
        if code != 0:
            raise RuntimeError(f"{kind} run failed ({code}):\n{child.stderr_tail()}")
        self._collect_acks(child)
        self._after_success(kind, child, timed)

    def _after_success(self, kind: str, child: _Child, timed: bool = True) -> None:
        self.result.finished[kind] += 1
        if timed:
            _, _, total, tail = child.said("DONE")[-1].split()
            self.result.durations.setdefault(kind, []).append((float(total), float(tail)))
        self._check_store()
        s = served(self.layout, self.result.acked)
        left = leftovers(self.layout)
        self.result.lost += len(s.lost)
        self.result.duplicated += len(s.duplicated)
        self.result.most_fresh = max(self.result.most_fresh, s.fresh)
        new = [p for p in left if p not in self.reported]
        self.reported.update(new)
        self.result.left_after_run += len(new)  # each leftover once, however long it stays
        if s.lost:
            self._violation(f"after {kind} -> {s.version_id}: lost {list(s.lost)[:10]}")
        if s.duplicated:
            self._violation(f"after {kind} -> {s.version_id}: duplicated {list(s.duplicated)[:10]}")
        if s.stale:
            self._violation(f"after {kind} -> {s.version_id}: stale vectors {list(s.stale)[:10]}")
        if new:
            self._violation(f"after {kind}: left behind {[str(p) for p in new[:10]]}")
        self.result.run_checks += not (s.lost or s.duplicated or s.stale or left)

    def _moment(self, kind: str) -> tuple[str, str, float]:
        """(moment, line to wait for, then seconds to wait) of the next kill."""
        total, tail = np.median(np.asarray(self.result.durations[kind]), axis=0)
        u = self.rng.random()
        if u < 0.1:
            return "start", "READY", 0.0
        if u < 0.4:
            return "publish", "PUBLISH", float(tail) * self.rng.random()
        return "uniform", "READY", float(total) * self.rng.random()

    def kill_one(self) -> bool:
        """Start an operation, SIGKILL it after a random delay, check CURRENT. Returns
        whether it was killed (False: it finished first)."""
        u = self.rng.random()
        kind = (
            "items"
            if u < self.items_share
            else "compact"
            if u < self.items_share + self.compact_share
            else "nightly"
        )
        if kind not in self.result.durations:
            self.run_ok(kind)  # its first run measures its duration
        moment, mark, delay = self._moment(kind)
        before = known_versions(self.layout)
        with self._running(kind) as child:
            if not child.wait_for("READY", _READY_TIMEOUT_S):
                raise RuntimeError(f"{kind} child did not start:\n{child.stderr_tail()}")
            if child.wait_for(mark, _RUN_TIMEOUT_S):
                time.sleep(delay)
            child.proc.kill()  # SIGKILL; a no-op once it has been reaped
            code = child.finish(_RUN_TIMEOUT_S)
        acked = self._collect_acks(child)
        if code != -signal.SIGKILL:
            if code != 0:
                raise RuntimeError(f"{kind} run failed ({code}):\n{child.stderr_tail()}")
            self._after_success(kind, child)
            return False
        phase = disk_phase(self.layout, before, child.proc.pid)
        if kind == "items" and not acked:
            assert self.pending is not None
            recorded = CatalogueLog(self.layout.catalogue_db).has_event(self.pending[0])
            phase = "before ACK, " + ("recorded" if recorded else "not recorded")
        elif kind == "items":
            phase = "after ACK, " + phase
        elif phase == "staging" and child.said("PUBLISH"):
            phase = "staging, catching up"  # publish_version folds in late entries first
        self.result.kills[kind, phase] += 1
        self.result.moments[moment] += 1
        self._check_store()
        return True


def run_kill_loop(
    root: Path,
    kills: int = 100,
    seed: int = 0,
    items_share: float = 0.7,
    check_every: int = 10,
    compact_share: float = 0.0,
    update_share: float = 0.0,
    factory: str = "auto",
) -> KillLoopResult:
    """Create a store at ``root`` with a first tiny nightly, then kill ``kills`` children
    (``items_share`` of them items events, ``compact_share`` compactions of CURRENT's
    chain of deltas, the rest nightly runs), with a successful items event and nightly
    every ``check_every`` kills and at the end. ``update_share`` of the items events give
    an earlier event's items new content; ``factory`` is the nightly's index."""
    start = time.monotonic()
    loop = _Loop(root, seed, items_share, compact_share, update_share, factory)
    # The first nightly creates the store; it generates the data snapshot too, so its
    # duration is not typical.
    loop.run_ok("nightly", timed=False)
    done = 0
    for attempt in range(kills * 3):
        if done >= kills:
            break
        if loop.kill_one():
            done += 1
            log.info("kill %d/%d (attempt %d): %s", done, kills, attempt + 1, loop.result.kills)
            if done % check_every == 0 and done < kills:
                loop.run_ok("items")
                loop.run_ok("nightly")
    loop.run_ok("items")
    loop.run_ok("nightly")
    loop.result.wall_s = time.monotonic() - start
    return loop.result


def render(result: KillLoopResult, command: str = "") -> str:
    """The result as a markdown table plus the totals."""
    total = sum(result.kills.values())
    rows = ["| operation | phase when killed | kills |", "|---|---|---:|"]
    for (kind, phase), n in sorted(result.kills.items()):
        rows.append(f"| {kind} | {phase} | {n} |")
    rows.append(f"| **all** | | **{total}** |")
    m = result.moments
    totals = [
        (
            "SIGKILLs",
            f"{total} (right after READY {m['start']}, uniform {m['uniform']}, "
            f"while publishing {m['publish']})",
        ),
        (
            "runs finished without a kill",
            ", ".join(f"{k} {n}" for k, n in sorted(result.finished.items())),
        ),
        (
            "median duration of unkilled runs (s: whole / publishing part)",
            ", ".join(
                "{} {:.3f} / {:.3f} ({} runs)".format(k, *np.median(v, axis=0), len(v))
                for k, v in sorted(result.durations.items())
            ),
        ),
        (
            "store checks passed (CURRENT set, verifies, intact; all versions verify)",
            str(result.store_checks),
        ),
        ("run checks passed (served once, nothing left)", str(result.run_checks)),
        (
            "acknowledged events (of them updates) / items",
            f"{result.acked_events} ({result.updates}) / {len(result.acked)}",
        ),
        ("events redelivered after a kill before ACK", str(result.redelivered)),
        ("most items served through fresh vectors at a check", str(result.most_fresh)),
        ("acknowledged items lost", str(result.lost)),
        ("items duplicated", str(result.duplicated)),
        ("leftovers of kills seen before a successful run", str(result.left_by_kills)),
        ("leftovers after a successful run", str(result.left_after_run)),
        ("violations", str(len(result.violations))),
        ("wall time", f"{result.wall_s:.0f} s"),
    ]
    lines = ([f"`{command}`", ""] if command else []) + rows + ["", "| total | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in totals]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> KillLoopResult:
    """Command line: run the loop, print the table, exit 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items-share", type=float, default=0.7)
    parser.add_argument("--check-every", type=int, default=10)
    parser.add_argument("--compact-share", type=float, default=0.0)
    parser.add_argument("--update-share", type=float, default=0.0)
    parser.add_argument("--index", default="auto", help="the nightly's index factory")
    parser.add_argument("--root", type=Path, help="new store folder [default: a temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root = args.root or Path(tempfile.mkdtemp(prefix="towerflow-kill-loop-")) / "store"
    if root.exists() and any(root.iterdir()):
        parser.error(f"--root {root} is not empty: the loop needs a new store")
    result = run_kill_loop(
        root,
        args.kills,
        args.seed,
        args.items_share,
        args.check_every,
        args.compact_share,
        args.update_share,
        args.index,
    )
    command = "python -m bench.kill_loop " + " ".join(argv if argv is not None else sys.argv[1:])
    print(render(result, command))
    for v in result.violations:
        print(f"VIOLATION: {v}", file=sys.stderr)
    if result.violations or args.keep:
        print(f"store kept at {root}", file=sys.stderr)
    elif args.root is None:
        shutil.rmtree(root.parent)
    if result.violations:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
