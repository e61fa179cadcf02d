"""``towerflow recommend``: top-K items for one user from the CURRENT version, raw IDs in
and out.

Register with ``app.command("recommend")(recommend_command)``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.options import JsonOpt, RootOpt, open_store

__all__ = ["recommend_command"]


def recommend_command(
    user_id: Annotated[
        str, typer.Option("--user-id", help="Raw user ID (as in the data, e.g. 42 or 'u-42').")
    ],
    k: Annotated[int, typer.Option("--k", min=1, help="How many items.")] = 10,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top-K items for a user from the CURRENT version (raw IDs in and out)."""
    from core.recall import Recaller

    # No CURRENT, an unknown user (exit 3) or a corrupt version (4): see cli.errors.
    recaller = Recaller.load(open_store(root))
    stored = recaller.stored_user_id(user_id)
    recs = recaller.recommend(stored, k)
    raw = recaller.raw_ids
    keys = raw.items([r.item_id for r in recs]) if raw else [str(r.item_id) for r in recs]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "version": recaller.version_id,
                    "user_id": user_id if raw else stored,
                    "items": [
                        {
                            "item_id": key if raw else r.item_id,
                            "score": round(r.score, 6),
                            "category": r.category,
                        }
                        for key, r in zip(keys, recs, strict=True)
                    ],
                }
            )
        )
        return
    typer.echo(f"version {recaller.version_id}, user {user_id}:")
    typer.echo(f"{'rank':>4}  {'item_id':>10}  {'score':>8}  category")
    for rank, (key, r) in enumerate(zip(keys, recs, strict=True), 1):
        typer.echo(f"{rank:>4}  {key:>10}  {r.score:>8.4f}  {r.category}")
