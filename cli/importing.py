"""``towerflow import``: commit an interaction log (plus optional user / item attribute
tables) as a data snapshot, in-process and without a Prefect server.

Register with ``app.command("import")(import_command)``. Heavy imports happen inside the
command so ``--help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from cli.options import JsonOpt, RootOpt, fail, root_path

if TYPE_CHECKING:
    from core.import_config import ImportConfig
    from core.importing import ImportResult

__all__ = ["build_config", "import_command"]


def _opt(help: str, default: str | None = None, metavar: str | None = None) -> Any:
    """An option with ``help``; ``default`` is the text shown as its default (None: none)."""
    return typer.Option(help=help, show_default=default or False, metavar=metavar)


_Cols = "Repeat the option or separate names with commas."


class _UsageError(ValueError):
    """Options that do not make a valid import."""


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _multi(values: list[str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    out = {}
    for v in values:
        col, colon, sep = v.partition(":")
        if not colon or not col or not sep:
            raise _UsageError(
                f"multi-valued column {v!r}: expected COLUMN:SEPARATOR, e.g. 'genres:|'"
            )
        out[col] = sep
    return out


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _attrs(path: Path | None, read: dict[str, Any], **fields: Any) -> dict[str, Any] | None:
    given = _drop_none(fields)
    if path is None:
        if given:
            raise _UsageError(f"options {sorted(given)} need the attribute file option")
        return None
    return {"path": str(path), "read": read, **given}


def build_config(options: dict[str, Any], config: Path | None) -> ImportConfig:
    """An `ImportConfig` from a YAML/JSON file or from the command's options (not both;
    ``mode`` may override the file). Raises ValueError naming what is wrong."""
    from pydantic import ValidationError

    from core.import_config import ImportConfig

    mode = options.pop("mode")
    given = sorted(k for k, v in options.items() if v is not None)
    if config is not None:
        if given:
            raise _UsageError(f"--config replaces the file and column options; also given: {given}")
        try:
            raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise _UsageError(f"cannot read config {config}: {e}") from None
        if not isinstance(raw, dict):
            raise _UsageError(f"config {config}: expected a mapping at the top level")
    else:
        raw = _options_to_config(options)
    if mode is not None:
        raw["mode"] = mode
    try:
        return ImportConfig.model_validate(raw)
    except ValidationError as e:
        raise _UsageError(
            f"invalid {'config ' + str(config) if config else 'options'}:\n{e}"
        ) from None


def _options_to_config(o: dict[str, Any]) -> dict[str, Any]:
    if o["interactions"] is None:
        raise _UsageError("give the interaction log file (or --config FILE)")
    # A shell passes "\\t" literally; a tab is what is meant.
    sep = o["sep"].replace("\\t", "\t") if o["sep"] else o["sep"]
    shared = _drop_none(
        {"format": o["fmt"], "sep": sep, "header": o["header"], "encoding": o["encoding"]}
    )

    def read(names: str | None) -> dict[str, Any]:
        return {**shared, **({"names": _split([names])} if names else {})}

    return _drop_none(
        {
            "name": o["name"],
            "k_core": o["k_core"],
            "interactions": {
                "path": str(o["interactions"]),
                "read": read(o["names"]),
                **_drop_none(
                    {k: o[k] for k in ("user_col", "item_col", "time_col", "rating_col")}
                    | {"min_rating": o["min_rating"], "label_col": o["label_col"]}
                ),
            },
            "items": _attrs(
                o["item_attrs"],
                read(o["item_names"]),
                key=o["item_key"],
                categorical=_split(o["item_categorical"]),
                multi=_multi(o["item_multi"]),
                numeric=_split(o["item_numeric"]),
                category=o["category_col"],
            ),
            "users": _attrs(
                o["user_attrs"],
                read(o["user_names"]),
                key=o["user_key"],
                categorical=_split(o["user_categorical"]),
                multi=_multi(o["user_multi"]),
                numeric=_split(o["user_numeric"]),
            ),
        }
    )


def _summary(result: ImportResult) -> str:
    rep, ref = result.report, result.ref
    lines = [
        f"{'reused' if result.reused else 'imported'} snapshot {ref.snapshot_id}: "
        f"{ref.n_users} users, {ref.n_items} items, {ref.n_interactions} interactions, "
        f"{rep.n_categories} categories",
        f"timestamps: {rep.timestamps}; ids: user {rep.id_mapping['user']}, "
        f"item {rep.id_mapping['item']}; features: {len(rep.user_features)} user, "
        f"{len(rep.item_features)} item",
    ]
    for f in rep.files:
        lines.append(f"{f.file} ({f.role}): read {f.rows_read}, kept {f.rows_kept}")
        for kind, reasons in (("invalid", f.invalid), ("filtered", f.filtered)):
            for reason, r in reasons.items():
                rows = ", ".join(map(str, r.rows)) + (", ..." if r.count > len(r.rows) else "")
                lines.append(f"  {kind} {reason}: {r.count} (rows {rows})")
    return "\n".join(lines)


def import_command(
    interactions: Annotated[
        Path | None,
        typer.Argument(
            help="Interaction log: CSV, TSV, any separator, or parquet.", show_default=False
        ),
    ] = None,
    config: Annotated[
        Path | None, _opt("YAML/JSON ImportConfig file, instead of the options below.")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="auto, csv, tsv or parquet.", show_default=False)
    ] = None,
    sep: Annotated[str | None, _opt("Field separator of every file, e.g. '::' or '\\t'.")] = None,
    encoding: Annotated[str | None, _opt("Text encoding.", "utf-8")] = None,
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header",
            help="Whether text files start with column names.",
            show_default="header",
        ),
    ] = None,
    names: Annotated[str | None, _opt("Comma-separated column names of the log.")] = None,
    user_col: Annotated[str | None, _opt("User ID column.", "user_id")] = None,
    item_col: Annotated[str | None, _opt("Item ID column.", "item_id")] = None,
    time_col: Annotated[
        str | None, _opt("Time column (unix seconds or ISO 8601).", "row order")
    ] = None,
    rating_col: Annotated[str | None, _opt("Rating column.")] = None,
    min_rating: Annotated[float | None, _opt("Keep only rows with rating >= this.")] = None,
    label_col: Annotated[str | None, _opt("0/1 label column; only positives are kept.")] = None,
    item_attrs: Annotated[Path | None, _opt("Item attribute table.")] = None,
    item_key: Annotated[str | None, _opt("Item ID column of the item table.")] = None,
    item_names: Annotated[
        str | None, _opt("Comma-separated column names of the item table.")
    ] = None,
    item_categorical: Annotated[
        list[str] | None, _opt(f"One-hot item columns. {_Cols}", metavar="COLS")
    ] = None,
    item_multi: Annotated[
        list[str] | None,
        _opt("Multi-hot item column as COLUMN:SEPARATOR, e.g. 'genres:|'.", metavar="COL:SEP"),
    ] = None,
    item_numeric: Annotated[
        list[str] | None, _opt(f"Z-scored item columns. {_Cols}", metavar="COLS")
    ] = None,
    category_col: Annotated[
        str | None, _opt("Item column whose first value is the item's category.")
    ] = None,
    user_attrs: Annotated[Path | None, _opt("User attribute table.")] = None,
    user_key: Annotated[str | None, _opt("User ID column of the user table.")] = None,
    user_names: Annotated[
        str | None, _opt("Comma-separated column names of the user table.")
    ] = None,
    user_categorical: Annotated[
        list[str] | None, _opt(f"One-hot user columns. {_Cols}", metavar="COLS")
    ] = None,
    user_multi: Annotated[
        list[str] | None, _opt("Multi-hot user column as COLUMN:SEPARATOR.", metavar="COL:SEP")
    ] = None,
    user_numeric: Annotated[
        list[str] | None, _opt(f"Z-scored user columns. {_Cols}", metavar="COLS")
    ] = None,
    k_core: Annotated[
        int | None, typer.Option(min=1, help="Keep only the k-core.", show_default=False)
    ] = None,
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--lenient",
            help="Fail on any bad row, or drop and count bad rows.",
            show_default="strict",
        ),
    ] = None,
    name: Annotated[str | None, _opt("Snapshot id prefix.", "import")] = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import an interaction log (and attribute tables) as an immutable data snapshot."""
    options = dict(locals())
    for key in ("config", "root", "as_json", "strict"):
        options.pop(key)
    options["mode"] = None if strict is None else ("strict" if strict else "lenient")
    try:
        cfg = build_config(options, config)
        from core.importing import run_import
        from storage import Layout

        result = run_import(Layout(root_path(root)), cfg)
    except ValueError as e:  # bad options, unreadable files, bad rows in strict mode
        raise fail(str(e), code=2) from None
    if as_json:
        typer.echo(
            json.dumps({"snapshot_id": result.ref.snapshot_id, **result.model_dump(mode="json")})
        )
    else:
        typer.echo(_summary(result))
