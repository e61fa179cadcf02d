"""Test helper: run commands that see a store read-only, as on a read-only mount.

Tests run as root here, and for root `chmod a-w` protects nothing. So the command runs in
a private mount namespace (`unshare --mount`, plus `--map-root-user` when not root) in
which the store is bind-mounted read-only onto itself: every write fails with EROFS, for
root too, the test process keeps its writable view, and the mount ends with the command.
Where namespaces are unavailable, a non-root user falls back to removing the store's
write bits for the command's duration (EACCES); root skips.

Also what the children run: `reads(root)` and `writes(root)` print JSON.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]

# First thing a child does: prove the store is read-only for it.
_PROBE = (
    "import errno, os, sys\n"
    "try:\n"
    "    os.mkdir(os.path.join(sys.argv[1], '.probe'))\n"
    "except OSError as e:\n"
    "    sys.exit(0 if e.errno in (errno.EROFS, errno.EACCES) else f'probe: {e}')\n"
    "sys.exit('probe: the store is writable')\n"
)


def tree(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under `root` (itself included): (is a folder, size, mtime in ns)."""
    out = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def _mount_argv(root: Path, argv: Sequence[str]) -> list[str]:
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        *user,
        "sh",
        "-c",
        script,
        str(root),
        *argv,
    ]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


@functools.cache
def _mounts_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        proc = _run(_mount_argv(Path(d), [sys.executable, "-c", _PROBE, d]))
        return proc.returncode == 0 and not Path(d, ".probe").exists()


@contextmanager
def read_only(root: Path) -> Iterator[Run]:
    """Yield `run(argv)`: runs `argv` (cwd the repository) seeing `root` read-only, after
    checking that a write under `root` really fails for it."""
    if _mounts_work():
        run: Run = lambda argv: _run(_mount_argv(root, argv))  # noqa: E731
        modes: dict[Path, int] = {}
    elif os.geteuid() != 0:
        run = _run
        modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)
    else:
        pytest.skip("no read-only bind mount (unshare --mount), and chmod does not bind root")
    try:
        probe = run([sys.executable, "-c", _PROBE, str(root)])
        assert probe.returncode == 0, probe.stderr
        yield run
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def python(code: str, *args: str) -> list[str]:
    """argv running `code` with this interpreter."""
    return [sys.executable, "-c", code, *args]


def child_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a child printed last, after checking that it succeeded."""
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- what the children run -------------------------------------------------------------


def reads(root: str) -> None:
    """Print every read of `storage` on the store at `root`, as JSON."""
    from storage import CatalogueLog, Layout, VersionStore

    layout = Layout(Path(root))
    store, catalogue = VersionStore(layout), CatalogueLog(layout.catalogue_db)
    infos = store.list_versions()
    current = store.current()
    out: dict[str, Any] = {
        "current": current,
        "versions": [(v.version_id, v.is_current, v.item_count) for v in infos],
        "events": [(e.action, e.from_version, e.to_version) for e in store.registry.events()],
        "head": catalogue.head(),
        "has_e1": catalogue.has_event("e1"),
        "seq_e2": catalogue.event_seq("e2"),
        "seq_missing": catalogue.event_seq("nope"),
    }
    if current is not None:
        out["open_current"] = store.open_current(verify=True).version_id
        out["opened"] = [store.open_version(v.version_id, verify=True).version_id for v in infos]
        out["verified"] = [store.verify(v.version_id).version_id for v in infos]
    for after in (0, 1):
        ch = catalogue.changes(after)
        out[f"changes_{after}"] = {
            "upto": ch.upto,
            "upserted": ch.upsert_id.tolist(),
            "content": ch.upsert_content.tolist(),
            "retired": ch.retired_id.tolist(),
            "events": list(ch.event_ids),
        }
    print(json.dumps(out))


def writes(root: str) -> None:
    """Try each writer on the store at `root`; print what each raised, as JSON."""
    import numpy as np

    from storage import CatalogueLog, ItemUpsert, Layout, VersionStore

    layout = Layout(Path(root))
    store, catalogue = VersionStore(layout, keep_versions=1), CatalogueLog(layout.catalogue_db)
    current, infos = store.current(), store.list_versions()
    attempts: dict[str, Callable[[], object]] = {
        "begin": store.begin,
        "register": lambda: store.registry.register_and_swap(
            "v-new", expected=current, created_at="2025-01-01T00:00:00Z", data_snapshot=None
        ),
        "append_upserts": lambda: catalogue.append_upserts(
            "e-new", [ItemUpsert(99, 1, np.ones(4, np.float32))]
        ),
        "append_retirements": lambda: catalogue.append_retirements("e-new2", [3]),
    }
    if len(infos) > 1:  # otherwise there is nothing to roll back to or prune
        attempts["rollback"] = lambda: store.rollback(infos[-1].version_id)
        attempts["prune"] = store.prune
    out: dict[str, list[str] | None] = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            out[name] = None
        except Exception as e:
            out[name] = [type(e).__name__, str(e)]
    print(json.dumps(out))


if __name__ == "__main__":
    {"reads": reads, "writes": writes}[sys.argv[1]](sys.argv[2])
