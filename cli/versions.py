"""``towerflow versions``, ``towerflow verify``, ``towerflow rollback`` and ``towerflow
compact``: list the published versions, check their files, make a kept one CURRENT
again, fold CURRENT's item deltas into one complete version.

Register with ``app.command("versions")(versions_command)``,
``app.command("verify")(verify_command)`` and ``app.command("rollback")(rollback_command)``.
Errors (unknown or corrupt version, a read-only store, a lost race) are raised and turned
into one ``error:`` line with its exit code by ``cli.errors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.options import JsonOpt, RootOpt, fail, open_store

if TYPE_CHECKING:
    from storage import VersionCheck, VersionInfo, VersionStore

__all__ = [
    "compact_command",
    "headline_metric",
    "rollback_command",
    "verify_command",
    "versions_command",
]

# Exit code of `verify` when a checked version has a bad file (the code cli.errors gives
# a corrupt version).
CORRUPT_EXIT = 4


def headline_metric(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """(name, value) of the model's quality-gate metric recorded in a manifest, if any."""
    name = metrics.get("gate_metric")
    value = metrics.get("rankers", {}).get("model", {}).get(name) if name else None
    return (str(name), float(value)) if isinstance(value, int | float) else None


def versions_command(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """List published versions, newest first ('*' marks CURRENT): kind (nightly build or
    items event), parent, item count and the quality-gate metric."""
    infos = open_store(root).list_versions()
    if as_json:
        typer.echo(json.dumps([_info_json(v) for v in infos]))
        return
    if not infos:
        typer.echo("no published versions")
        return
    typer.echo(f"  {'version':<28}  {'kind':<7}  {'parent':<28}  {'items':>9}  metric")
    for v in infos:
        mark = "*" if v.is_current else " "
        head = headline_metric(v.metrics)
        metric = f"{head[0]} {head[1]:.4f}" if head else "-"
        items = "?" if v.item_count is None else f"{v.item_count:,}"
        typer.echo(
            f"{mark} {v.version_id:<28}  {v.kind:<7}  {v.parent or '-':<28}  {items:>9}  {metric}"
        )


def verify_command(
    version: Annotated[
        str | None,
        typer.Argument(
            help="Version id to check (default: every registered version).", show_default=False
        ),
    ] = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every file of a version (or of all) against its manifest: size and SHA-256.

    Reports each file's state and how many names share its bytes (hard links between a
    version and the item versions derived from it); a delta is damaged too when a
    version of its chain is. Exit 0 when all are intact, 4 when a file is missing or
    damaged.
    """
    store = open_store(root)
    ids = [version] if version else [v.version_id for v in store.list_versions()]
    checks = {vid: store.check(vid) for vid in ids}
    # A delta is served on top of its chain: it is only as good as every version under it.
    chains = {vid: _chain_below(store, vid) for vid in ids}
    needs = {vid: below for vid, (below, _) in chains.items()}
    for vid in {b for below in needs.values() for b in below} - set(checks):
        checks[vid] = store.check(vid)
    broken = {
        vid: [b for b in needs[vid] if not checks[b].intact] + ([gap] if gap else [])
        for vid, (_, gap) in chains.items()
    }
    current = store.current()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "version_id": vid,
                        "current": vid == current,
                        "intact": checks[vid].intact,
                        "chain": needs[vid],
                        "chain_intact": not broken[vid],
                        "files": [asdict(f) for f in checks[vid].files],
                    }
                    for vid in ids
                ]
            )
        )
    else:
        if not ids:
            typer.echo("no published versions")
        for vid in ids:
            _print_check(checks[vid], vid == current)
            if broken[vid]:
                typer.echo(f"  needs damaged {', '.join(broken[vid])} (its chain)")
    bad = [vid for vid in ids if not checks[vid].intact or broken[vid]]
    if bad:
        if not as_json:
            typer.secho(f"damaged: {', '.join(bad)}", err=True, fg=typer.colors.RED)
        raise typer.Exit(CORRUPT_EXIT)


def _chain_below(store: VersionStore, version_id: str) -> tuple[list[str], str | None]:
    """The versions a delta is read on, its base first ([] for a complete version), and
    why its chain cannot be read, if it cannot (a missing parent)."""
    from storage import CorruptVersionError, StorageError
    from storage.chains import resolve_chain

    try:
        version = store.open_version(version_id, verify=False)
    except (StorageError, OSError):
        return [], None  # its own manifest: its own check reports it
    try:
        chain = resolve_chain(store, version)
    except CorruptVersionError as e:
        return [], e.reason
    return [v.version_id for v in chain.versions[:-1]], None


def rollback_command(
    version: Annotated[str, typer.Argument(help="Version id to make CURRENT again.")],
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a previous (kept, checksum-valid) version CURRENT again. If it is damaged, say
    which kept versions are intact."""
    from storage import CorruptVersionError

    store = open_store(root)
    before = store.current()
    try:
        store.rollback(version, expected_current=before)
    except CorruptVersionError as e:
        intact = _intact_versions(store, exclude=version)
        hint = (
            f"intact kept versions: {', '.join(intact)}" if intact else "no kept version is intact"
        )
        raise fail(f"{e}; {hint}", CORRUPT_EXIT) from None
    if as_json:
        typer.echo(json.dumps({"previous": before, "current": version}))
    else:
        typer.echo(f"CURRENT: {before} -> {version}")


def compact_command(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Fold CURRENT's chain of item deltas into one complete version (what the
    compact-items deployment does when a chain grows past runtime.max_delta_chain).
    Events keep publishing meanwhile; a nightly published meanwhile supersedes it."""
    from core.compaction import compact_current

    store = open_store(root)
    result = compact_current(store.layout, store.keep_versions, store.keep_item_versions)
    if as_json:
        typer.echo(json.dumps(asdict(result)))
    elif result.compacted:
        typer.echo(f"CURRENT: {result.version_id} ({result.folded} deltas folded)")
    else:
        typer.echo(f"nothing to compact: CURRENT {result.version_id} is complete")


def _info_json(v: VersionInfo) -> dict[str, Any]:
    out = asdict(v)
    head = headline_metric(v.metrics)
    out["headline_metric"] = {"name": head[0], "value": head[1]} if head else None
    return out


def _intact_versions(store: VersionStore, exclude: str) -> list[str]:
    """Kept versions whose files all match their manifests, newest first (labelled)."""
    out = []
    intact: dict[str, bool] = {}

    def ok(vid: str) -> bool:
        if vid not in intact:
            intact[vid] = store.check(vid).intact
        return intact[vid]

    for v in store.list_versions():
        below, gap = _chain_below(store, v.version_id)
        if v.version_id != exclude and ok(v.version_id) and not gap and all(map(ok, below)):
            out.append(f"{v.version_id} ({v.kind}{', CURRENT' if v.is_current else ''})")
    return out


def _print_check(c: VersionCheck, is_current: bool) -> None:
    label = " (CURRENT)" if is_current else ""
    typer.echo(f"{c.version_id}{label}: {'intact' if c.intact else 'DAMAGED'}")
    for f in c.files:
        shared = f", shared by {f.links} names" if f.links and f.links > 1 else ""
        size = "" if f.actual_bytes is None else f"{f.actual_bytes:,} bytes"
        detail = f"  {f.detail}" if f.detail and f.status != "ok" else ""
        typer.echo(f"  {f.status:<14} {f.name:<24} {size}{shared}{detail}")
