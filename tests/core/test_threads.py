"""The default thread count follows the CPUs the process may use (cgroup quota, affinity
mask); explicit settings win; entry points set the OpenMP wait policy before torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cpus import THREADS_ENV, CpuBudget, apply_openmp_defaults, cpu_budget, thread_budget

REPO = Path(__file__).resolve().parents[2]
AFFINITY = len(os.sched_getaffinity(0))


def _tree(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake cgroup mount (``files``: path under it -> content) and /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_line + "\n")
    return root, proc


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("150000 100000", 2), ("50000 100000", 1), ("100000 100000", 1), ("1 100000", 1)],
)
def test_cgroup_v2_quota_rounds_up(tmp_path: Path, cpu_max: str, expected: int) -> None:
    root, proc = _tree(tmp_path, "0::/", {"cpu.max": cpu_max})
    budget = cpu_budget(root, proc)
    assert budget.count == min(expected, AFFINITY)
    assert f"cgroup cpu.max {cpu_max.replace(' ', '/')} = {expected}" in budget.reason
    assert f"affinity {AFFINITY} CPUs" in budget.reason


def test_cgroup_v2_max_is_no_limit(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/", {"cpu.max": "max 100000"})
    budget = cpu_budget(root, proc)
    assert budget.count == AFFINITY
    assert "cgroup" not in budget.reason


def test_cgroup_v2_limit_of_an_ancestor_applies(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/jobs/one",
        {"jobs/cpu.max": "100000 100000", "jobs/one/cpu.max": "max 100000"},
    )
    assert cpu_budget(root, proc).count == 1


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    files = {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "50000"}
    files["cpu,cpuacct/docker/x/cpu.cfs_period_us"] = "100000"
    root, proc = _tree(tmp_path, "4:cpu,cpuacct:/docker/x\n0::/", files)
    budget = cpu_budget(root, proc)
    assert budget.count == 1
    assert "cgroup cpu.cfs_quota_us 50000/100000 = 1" in budget.reason


def test_cgroup_v1_unlimited_and_missing(tmp_path: Path) -> None:
    files = {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    # The process's path is not visible (its own namespace): the mount's root is read.
    root, proc = _tree(tmp_path, "2:cpu:/not/here", files)
    assert cpu_budget(root, proc).count == AFFINITY
    assert cpu_budget(tmp_path / "absent", tmp_path / "absent-proc").count == AFFINITY


def test_explicit_beats_env_beats_computed(tmp_path: Path) -> None:
    root, _ = _tree(tmp_path, "0::/", {"cpu.max": "50000 100000"})
    assert thread_budget(3, {THREADS_ENV: "2"}, root).count == 3
    assert thread_budget(None, {}, root).count == 1  # the quota (any cgroup path: the root)
    env_budget = thread_budget(None, {THREADS_ENV: "2"})
    assert (env_budget.count, env_budget.reason) == (2, f"{THREADS_ENV}=2")
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match=THREADS_ENV):
            thread_budget(None, {THREADS_ENV: bad})


def test_openmp_defaults_apply_when_confined_and_leave_the_users_choice() -> None:
    whole = CpuBudget(os.cpu_count() or 1, "whole machine")
    part = CpuBudget(max(1, (os.cpu_count() or 1) - 1), "quota")
    env: dict[str, str] = {}
    assert apply_openmp_defaults(env, whole) is False and env == {}  # quiet speed kept
    if part.count < whole.count:
        assert apply_openmp_defaults(env, part) is True
        assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    confined = CpuBudget(0, "confined")  # fewer than any machine: always confined
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    apply_openmp_defaults(env, confined)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"
    env = {"GOMP_SPINCOUNT": "10000"}  # libgomp prefers it over the wait policy
    apply_openmp_defaults(env, confined)
    assert "OMP_WAIT_POLICY" not in env


def _child(code: str, *args: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in (THREADS_ENV, "OMP_WAIT_POLICY")}
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**clean, **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks")
def test_affinity_mask_sets_the_default_and_explicit_wins() -> None:
    code = """
import json, os
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
from core.cpus import cpu_budget, thread_budget
from core.threads import apply_threads
import faiss, torch
applied = apply_threads(None)
out = {"budget": cpu_budget().count, "applied": applied, "torch": torch.get_num_threads(),
       "faiss": faiss.omp_get_max_threads(), "explicit": thread_budget(3).count}
print(json.dumps(out))
"""
    got = _child(code)
    assert got == {"budget": 1, "applied": 1, "torch": 1, "faiss": 1, "explicit": 3}
    assert _child(code, **{THREADS_ENV: "2"})["applied"] == 2


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
    reason="needs affinity masks and 2 CPUs",
)
def test_cli_sets_the_wait_policy_before_torch_loads_when_confined() -> None:
    code = """
import json, os, sys
if sys.argv[1:] == ["confine"]:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import cli.app
print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"), "torch": "torch" in sys.modules}))
"""
    whole = _child(code) if len(os.sched_getaffinity(0)) == os.cpu_count() else None
    if whole is not None:  # the whole machine: libgomp's spin default (quiet speed) stays
        assert whole == {"policy": None, "torch": False}
    assert _child(code, "confine") == {"policy": "PASSIVE", "torch": False}
    assert _child(code, "confine", OMP_WAIT_POLICY="ACTIVE")["policy"] == "ACTIVE"


def test_adaptive_setting_parses_and_refuses_nonsense() -> None:
    from core.cpus import ADAPTIVE_ENV, adaptive_enabled

    assert adaptive_enabled({}) is True
    for on in ("1", "true", "YES", " on "):
        assert adaptive_enabled({ADAPTIVE_ENV: on}) is True
    for off in ("0", "false", "No", "off"):
        assert adaptive_enabled({ADAPTIVE_ENV: off}) is False
    with pytest.raises(ValueError, match=ADAPTIVE_ENV):
        adaptive_enabled({ADAPTIVE_ENV: "sometimes"})


def test_only_a_default_count_above_one_is_adapted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A governor is installed for the computed default (when on and > 1 CPU), never for
    an explicit count or $TOWERFLOW_THREADS, and the count applied is the ceiling."""
    import torch

    from core.cpus import ADAPTIVE_ENV
    from core.threads import apply_thread_budget
    from model.threadgov import active, install

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(THREADS_ENV, raising=False)
        monkeypatch.setenv(ADAPTIVE_ENV, "1")
        budget = apply_thread_budget(None)
        gov = active()
        if budget.count > 1:
            assert gov is not None and gov.max_threads == budget.count == gov.current
            assert torch.get_num_threads() == budget.count
        else:
            assert gov is None
        assert apply_thread_budget(1).explicit and active() is None
        monkeypatch.setenv(THREADS_ENV, "2")
        assert apply_thread_budget(None).explicit and active() is None
        monkeypatch.delenv(THREADS_ENV)
        monkeypatch.setenv(ADAPTIVE_ENV, "0")
        assert not apply_thread_budget(None).explicit and active() is None
    finally:
        install(None)
        torch.set_num_threads(before)
