"""``towerflow versions`` and ``towerflow rollback``: list the published versions, make a
kept one CURRENT again.

Register with ``app.command("versions")(versions_command)`` and
``app.command("rollback")(rollback_command)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from cli.options import JsonOpt, RootOpt, fail, open_store

__all__ = ["rollback_command", "versions_command"]


def versions_command(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """List published versions, newest first; '*' marks CURRENT."""
    infos = open_store(root).list_versions()
    if as_json:
        typer.echo(json.dumps([asdict(v) for v in infos]))
        return
    if not infos:
        typer.echo("no published versions")
        return
    for v in infos:
        mark = "*" if v.is_current else " "
        typer.echo(f"{mark} {v.version_id}  created {v.created_at}  parent {v.parent}")


def rollback_command(
    version: Annotated[str, typer.Argument(help="Version id to make CURRENT again.")],
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a previous (kept, checksum-valid) version CURRENT again."""
    from storage import (
        CorruptVersionError,
        PublishConflictError,
        StoreReadOnlyError,
        VersionNotFoundError,
    )

    store = open_store(root)
    before = store.current()
    try:
        store.rollback(version, expected_current=before)
    except (
        VersionNotFoundError,
        CorruptVersionError,
        PublishConflictError,
        StoreReadOnlyError,
    ) as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps({"previous": before, "current": version}))
    else:
        typer.echo(f"CURRENT: {before} -> {version}")
