"""The operations of the corruption matrix (``bench.corruption``), each run on its own copy
of the base store after one file of a version was damaged: what happened, whether it was
what we expect, and any breach of the two safety rules (no version published on damaged
bytes, no answer served from them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.corruption_cli import CliRunnerFn, reason_of, refusal, shorten
from bench.damage import (
    Damage,
    DamageKind,
    damage_file,
    holders,
    new_versions,
    published_problems,
)
from storage import CatalogueLog, Layout, VersionStore, read_json
from storage.manifest import read_manifest

__all__ = ["OPERATIONS", "Base", "Cell", "Outcome"]


@dataclass(frozen=True)
class Base:
    """The store every cell copies: nightly 1, nightly 2, then an items version on top of
    nightly 2 (CURRENT), with what the checks compare against."""

    root: Path
    nightly1: str
    nightly2: str
    current: str  # the items version
    user_id: int
    new_item: dict[str, Any]  # a valid item no version holds yet
    nightly_config: dict[str, Any]  # NightlyConfig fields, storage_root left out
    history: list[dict[str, Any]]  # CURRENT's metrics_history.json, intact
    metrics: dict[str, Any]  # CURRENT's manifest metrics, intact

    @property
    def labels(self) -> dict[str, str]:
        return {self.nightly1: "N1", self.nightly2: "N2", self.current: "I"}


@dataclass(frozen=True)
class Outcome:
    """One cell of one operation: ``summary`` for the table, ``ok`` when it behaved as
    expected, ``violations`` for any breach of the safety rules, ``detail`` the full
    messages (version ids replaced by their labels), ``damage`` what was done to which
    version's file."""

    summary: str
    ok: bool
    violations: tuple[str, ...] = ()
    detail: str = ""
    seconds: float = 0.0
    damage: str = ""


class Cell:
    """A copy of the base store with one file of one version damaged, and the checks
    every operation shares."""

    def __init__(self, base: Base, root: Path, file: str, kind: DamageKind) -> None:
        self.base, self.root, self.file, self.kind = base, root, file, kind
        self.store = VersionStore(Layout(root))
        self.before = [v.version_id for v in self.store.list_versions()]
        self.labels = dict(base.labels)
        self.violations: list[str] = []
        self.damaged: set[str] = set()  # what the damage reached, seen by checks or not
        self.damage_note = ""

    def damage(self, version_id: str) -> Damage:
        """Damage ``version_id``'s file; note every version the damage reached."""
        damage = damage_file(self.root, version_id, self.file, self.kind)
        self.damaged = holders(self.store, damage)
        reached = ", ".join(sorted(self.label(v) for v in self.damaged))
        self.damage_note = (
            f"{self.label(version_id)} {self.file}: {damage.detail}; reached {reached}"
        )
        return damage

    def intact(self, version_id: str) -> bool:
        return self.store.check(version_id).intact

    def short(self, text: str) -> str:
        return shorten(text, self.root, self.labels)

    def label(self, version_id: str | None) -> str:
        return self.labels.get(version_id or "", str(version_id))

    def audit(self, damage: Damage) -> list[str]:
        """Versions published since the copy was made (labelled), after checking that
        none stands on damaged bytes (a rollback checks where it moved CURRENT itself)."""
        new = new_versions(self.store, self.before)
        for i, vid in enumerate(new):
            self.labels.setdefault(vid, "new" if i == 0 else f"new{i + 1}")
        self.violations += [
            f"published on damaged bytes: {self.short(p)}"
            for p in published_problems(self.store, new, damage)
        ]
        return new

    def outcome(self, summary: str, ok: bool, detail: str, started: float) -> Outcome:
        return Outcome(
            summary,
            ok and not self.violations,
            tuple(self.violations),
            self.short(detail),
            time.perf_counter() - started,
            self.damage_note,
        )


def op_recommend(cell: Cell, cli: CliRunnerFn) -> Outcome:
    """``towerflow recommend`` on a damaged CURRENT: refused with exit 4 and one
    ``error:`` line, nothing answered."""
    t0 = time.perf_counter()
    damage = cell.damage(cell.base.current)
    res = cli(["recommend", "--user-id", str(cell.base.user_id), "--root", str(cell.root)])
    cell.audit(damage)
    if res.code == 0:
        cell.violations.append("answered from the damaged CURRENT")
        return cell.outcome("answered from damaged I", False, res.stdout, t0)
    ok = res.clean_failure and res.code == 4
    return cell.outcome(refusal(res), ok, res.stderr.strip(), t0)


def op_rollback(cell: Cell, cli: CliRunnerFn) -> Outcome:
    """``towerflow rollback`` to nightly 2 (CURRENT's parent: damaged with it when the
    file is shared), to nightly 1 (independent: must succeed), then back to the damaged
    CURRENT (must be refused)."""
    t0 = time.perf_counter()
    base, root = cell.base, str(cell.root)
    damage = cell.damage(base.current)
    steps: list[str] = []
    details: list[str] = []
    ok = True
    for target in (base.nightly2, base.nightly1, base.current):
        intact = target not in cell.damaged
        before = cell.store.current()
        res = cli(["rollback", target, "--root", root])
        after = cell.store.current()
        name = cell.label(target)
        if res.code == 0:
            steps.append(f"→{name} done")
            if not intact:
                cell.violations.append(f"rolled back onto damaged {name}")
            ok &= intact and after == target
        else:
            steps.append(f"→{name} {refusal(res)}")
            details.append(res.stderr.strip())
            ok &= not intact and res.clean_failure and res.code == 4 and after == before
        if target == base.nightly1:
            ok &= res.code == 0  # the independent nightly is always a way back
    cell.audit(damage)
    return cell.outcome("; ".join(steps), ok, "\n".join(details), t0)


def op_items(cell: Cell) -> Outcome:
    """``core.apply_items`` with one new valid item. Damage to a file the delta derives
    from (the model, its config, the items table, the manifest): refused with
    ``CorruptVersionError``, CURRENT unchanged, nothing published. Damage elsewhere: the
    delta is published (it carries none of the damaged bytes), and no reader serves it
    (loading CURRENT verifies the whole chain)."""
    from core import ItemsBatch, apply_items
    from storage import CorruptVersionError

    t0 = time.perf_counter()
    damage = cell.damage(cell.base.current)
    catalogue = CatalogueLog(cell.store.layout.catalogue_db)
    head = catalogue.head()
    batch = ItemsBatch(event_id="corruption-matrix", operation="create", items=[cell.base.new_item])
    try:
        _, current = apply_items(str(cell.root), batch)
    except CorruptVersionError as e:
        new = cell.audit(damage)
        unchanged = cell.store.current() == cell.base.current and not new
        recorded = catalogue.head() != head
        summary = f"refused ({reason_of(str(e))})" + ("; event recorded" if recorded else "")
        return cell.outcome(summary, unchanged, f"CorruptVersionError: {e}", t0)
    except Exception as e:  # any other failure is a finding, not a crash of the matrix
        cell.audit(damage)
        return cell.outcome(f"failed: {type(e).__name__}", False, f"{e!r}", t0)
    new = cell.audit(damage)
    for vid in new:
        child = read_manifest(vid, cell.store.layout.version_dir(vid))
        if child.metrics != cell.base.metrics:
            cell.violations.append(f"{cell.label(vid)} carries CURRENT's damaged manifest metrics")
    from core.delta_publish import BASE_READS
    from core.recall import Recaller
    from storage import VersionFiles

    derived = cell.file in (*BASE_READS, VersionFiles.MANIFEST)
    try:
        Recaller.load(cell.store)
        served = "served"
    except CorruptVersionError as e:
        served = f"serving refused ({reason_of(str(e))})"
    delta = "delta" in read_manifest(current, cell.store.layout.version_dir(current)).extra
    ok = not derived and delta and served != "served"
    return cell.outcome(f"published delta {cell.label(current)}; {served}", ok, "", t0)


def op_nightly(cell: Cell) -> Outcome:
    """``core.run_nightly`` (the tiny config, same snapshot): publishes a new intact version
    built from the data snapshot, whose metric history matches the intact one."""
    from core import NightlyConfig, run_nightly
    from storage import VersionFiles

    t0 = time.perf_counter()
    damage = cell.damage(cell.base.current)
    runtime = {"storage_root": str(cell.root)}
    cfg = NightlyConfig.model_validate(cell.base.nightly_config | {"runtime": runtime})
    try:
        vid = run_nightly(cfg)
    except Exception as e:  # a nightly that cannot rebuild is a finding
        cell.audit(damage)
        return cell.outcome(f"failed: {type(e).__name__}", False, f"{type(e).__name__}: {e}", t0)
    cell.audit(damage)
    # The new history is CURRENT's (read from the damaged version) + the new entry: any
    # inherited entry must be an intact one.
    inherited = read_json(cell.store.layout.version_dir(vid) / VersionFiles.METRICS_HISTORY)[:-1]
    intact = {h["version_id"]: h for h in cell.base.history}
    if any(intact.get(h.get("version_id")) != h for h in inherited):
        cell.violations.append("new version's metrics_history.json carries damaged entries")
    ok = cell.store.current() == vid and cell.intact(vid)
    seconds = time.perf_counter() - t0
    note = (
        ""
        if inherited == cell.base.history
        else f"; metric history kept {len(inherited)} of {len(intact)} past entries"
    )
    return cell.outcome(f"new version, intact ({seconds:.1f} s){note}", ok, "", t0)


def _service(cell: Cell) -> Any:
    from service import RecallService

    # No polling thread worth the name: each `refresh()` below is one poll, so the cell
    # is deterministic.
    return RecallService(cell.store, poll_interval_s=3600)


def _recall(client: Any, user_id: int) -> tuple[int, str | None]:
    r = client.post("/v1/recall", json={"user_id": user_id, "k": 10})
    return r.status_code, r.json().get("version") if r.status_code == 200 else None


@contextmanager
def _api(service: Any) -> Iterator[httpx.Client]:
    """The recall app over ``service`` on a loopback port (its start loads CURRENT)."""
    from bench.http_server import serve_in_thread
    from service import create_app

    with serve_in_thread(create_app(service)) as url, httpx.Client(base_url=url) as client:
        yield client


def op_api_start(cell: Cell) -> Outcome:
    """The HTTP service started on a damaged CURRENT: refuses to load it and answers 503;
    after a rollback to N1 its next poll serves N1."""
    t0 = time.perf_counter()
    damage = cell.damage(cell.base.current)
    service = _service(cell)
    with _api(service) as client:
        code, version = _recall(client, cell.base.user_id)
        health = client.get("/v1/health")
        cell.store.rollback(cell.base.nightly1)
        service.refresh()  # the watcher's next poll
        after = _recall(client, cell.base.user_id)
    cell.audit(damage)
    rejection = health.json().get("last_rejection") or {}
    if code == 200 and version in cell.damaged:
        cell.violations.append(f"answered 200 from damaged {cell.label(version)}")
    reason = f"rejected I: {reason_of(rejection['reason'])}" if rejection else "nothing rejected"
    summary = f"{code}, health {health.status_code} ({reason}); after rollback: "
    summary += f"{after[0]} from {cell.label(after[1])}"
    ok = (
        code == 503
        and health.status_code == 503
        and rejection.get("version") == cell.base.current
        and after == (200, cell.base.nightly1)
    )
    return cell.outcome(summary, ok, str(rejection.get("reason", "")), t0)


def op_api_swap(cell: Cell) -> Outcome:
    """The HTTP service serving intact CURRENT (I) while an items event's delta (I2) is
    published and then damaged before the service's next poll: I2's own file: I2 is
    rejected and I keeps answering 200; I's file (under I2): I2 is applied in place to
    the I the service verified and holds in memory, reading none of the damaged bytes."""
    from core import ItemsBatch, apply_items

    t0 = time.perf_counter()
    service = _service(cell)
    with _api(service) as client:
        first = _recall(client, cell.base.user_id)
        batch = ItemsBatch(event_id="swap", operation="create", items=[cell.base.new_item])
        _, i2 = apply_items(str(cell.root), batch)
        cell.labels[i2] = "I2"
        cell.before.append(i2)  # published intact, before the damage
        # I2 is a delta on I: a file it does not hold is damaged where I2 reads it (in I,
        # which the service keeps serving from memory).
        i2_files = read_manifest(i2, cell.store.layout.version_dir(i2)).files
        holds = cell.file in i2_files or cell.file == "manifest.json"
        damage = cell.damage(i2 if holds else cell.base.current)
        swapped = service.refresh()  # the watcher's next poll
        code, version = _recall(client, cell.base.user_id)
        health = client.get("/v1/health").json()
    cell.audit(damage)
    if code == 200 and version != cell.base.current and (holds or version != i2):
        cell.violations.append(f"answered 200 from {cell.label(version)} loaded after the damage")
    rejection = health.get("last_rejection") or {}
    if holds:  # I2's own bytes are damaged: it is rejected, I keeps serving
        ok = (
            first == (200, cell.base.current)
            and (code, version) == (200, cell.base.current)
            and not swapped
            and rejection.get("version") == i2
        )
    else:  # I's file on disk: I2 is applied to the I verified in memory, nothing re-read
        ok = (
            first == (200, cell.base.current)
            and (code, version) == (200, i2)
            and swapped
            and health.get("deltas_applied") == 1
            and not rejection
        )
    reason = f"rejected I2: {reason_of(rejection['reason'])}" if rejection else "nothing rejected"
    served = (
        "kept serving I"
        if version == cell.base.current
        else f"applied {cell.label(version)} in place"
        if health.get("deltas_applied")
        else f"served {cell.label(version)}"
    )
    summary = f"{served}: {code} ({reason})"
    return cell.outcome(summary, ok, str(rejection.get("reason", "")), t0)


# name -> how to run it on a fresh copy of the base store; the CLI ones take a runner.
OPERATIONS: dict[str, Callable[[Cell, CliRunnerFn], Outcome]] = {
    "recommend": op_recommend,
    "rollback": op_rollback,
    "items publish": lambda cell, _cli: op_items(cell),
    "nightly": lambda cell, _cli: op_nightly(cell),
    "api (start)": lambda cell, _cli: op_api_start(cell),
    "api (hot swap)": lambda cell, _cli: op_api_swap(cell),
}
