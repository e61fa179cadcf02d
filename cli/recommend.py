"""``towerflow recommend``: top-K items from the CURRENT version through the same recall
path, defaults and answer as ``POST /v1/recall`` (seen items excluded, category filters,
a live profile); ``--json`` prints the API's response body.

Register with ``app.command("recommend")(recommend_command)``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.options import JsonOpt, RootOpt, open_store

__all__ = ["recommend_command"]

# As the API's schema (core.recall_answer.MAX_K; not imported here so that `--help` does
# not load torch); a test checks they agree.
_MAX_K = 1000


def _profile(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"--profile must be comma-separated numbers, got {text!r}", param_hint="--profile"
        ) from None


def recommend_command(
    user_id: Annotated[
        str | None,
        typer.Option(
            "--user-id",
            help="Raw user ID (as in the data, e.g. 42 or 'u-42'); may be left out with "
            "--profile (an anonymous user; default: none).",
            show_default=False,
        ),
    ] = None,
    k: Annotated[
        int,
        typer.Option(
            "--k", min=1, max=_MAX_K, help=f"How many items (1..{_MAX_K}, at most the catalogue)."
        ),
    ] = 10,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Live profile features, comma-separated (e.g. 0.5,-1,0.25,2); an unknown "
            "user is embedded from it alone (default: the user's stored features).",
            show_default=False,
        ),
    ] = None,
    exclude_seen: Annotated[
        bool,
        typer.Option(
            "--exclude-seen/--include-seen", help="Leave out the items the user has seen."
        ),
    ] = True,
    include_category: Annotated[
        list[int] | None,
        typer.Option(
            help="Only items of this category (repeatable; default: every category).",
            show_default=False,
        ),
    ] = None,
    exclude_category: Annotated[
        list[int] | None,
        typer.Option(
            help="No items of this category (repeatable; default: none left out).",
            show_default=False,
        ),
    ] = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top-K items for a user or a live profile from the CURRENT version: the HTTP API's
    recall, defaults and answer (raw IDs in and out)."""
    from core.recall import Recaller
    from core.recall_answer import answer

    if user_id is None and profile is None:
        raise typer.BadParameter("give --user-id, --profile, or both", param_hint="--user-id")
    features = _profile(profile)
    # No CURRENT, an unknown user (exit 3), a corrupt version (4) or a k above the
    # catalogue (2): see cli.errors.
    recaller = Recaller.load(open_store(root))
    stored = None if user_id is None else recaller.stored_user_id(user_id)
    result = recaller.recall(
        stored,
        features,
        k,
        exclude_seen=exclude_seen,
        include_categories=include_category or None,
        exclude_categories=exclude_category or None,
    )
    body = answer(recaller, result, stored)
    if as_json:
        typer.echo(json.dumps(body, allow_nan=False))
        return
    who = "anonymous profile" if user_id is None else f"user {user_id}"
    known = "" if result.known_user else " (unknown: embedded from the profile)"
    typer.echo(f"version {body['version']}, {who}{known}, {len(body['items'])} items:")
    typer.echo(f"{'rank':>4}  {'item_id':>10}  {'score':>8}  category")
    for rank, item in enumerate(body["items"], 1):
        key = item.get("raw_item_id", item["item_id"])
        typer.echo(f"{rank:>4}  {key!s:>10}  {item['score']:>8.4f}  {item['category']}")
