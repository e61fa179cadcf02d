"""``towerflow versions``, ``towerflow verify`` and ``towerflow rollback``: list the
published versions, check their files, make a kept one CURRENT again.

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

__all__ = ["headline_metric", "rollback_command", "verify_command", "versions_command"]

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
    version and the item versions derived from it). Exit 0 when all are intact, 4 when a
    file is missing or damaged.
    """
    store = open_store(root)
    ids = [version] if version else [v.version_id for v in store.list_versions()]
    checks = [store.check(vid) for vid in ids]
    current = store.current()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "version_id": c.version_id,
                        "current": c.version_id == current,
                        "intact": c.intact,
                        "files": [asdict(f) for f in c.files],
                    }
                    for c in checks
                ]
            )
        )
    else:
        if not checks:
            typer.echo("no published versions")
        for c in checks:
            _print_check(c, c.version_id == current)
    bad = [c.version_id for c in checks if not c.intact]
    if bad:
        if not as_json:
            typer.secho(f"damaged: {', '.join(bad)}", err=True, fg=typer.colors.RED)
        raise typer.Exit(CORRUPT_EXIT)


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


def _info_json(v: VersionInfo) -> dict[str, Any]:
    out = asdict(v)
    head = headline_metric(v.metrics)
    out["headline_metric"] = {"name": head[0], "value": head[1]} if head else None
    return out


def _intact_versions(store: VersionStore, exclude: str) -> list[str]:
    """Kept versions whose files all match their manifests, newest first (labelled)."""
    out = []
    for v in store.list_versions():
        if v.version_id != exclude and store.check(v.version_id).intact:
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
