"""``towerflow import``: commit an interaction log (plus optional user / item attribute
tables) as a data snapshot, in-process and without a Prefect server.

Register with ``app.command("import")(import_command)``. Heavy imports happen inside the
command so ``--help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
import yaml

from cli.options import JsonOpt, RootOpt, fail, root_path

if TYPE_CHECKING:
    from core.import_config import ImportConfig
    from core.importing import ImportResult

__all__ = ["build_config", "import_command"]


def _opt(help: str, default: str = "none", metavar: str | None = None) -> Any:
    """An option with ``help``; ``default`` is the text shown as its default."""
    return typer.Option(help=help, show_default=default, metavar=metavar)


_Cols = "Repeat the option or separate names with commas."
# Per-file read options of an attribute file ("--item-sep", ...).
_READ_KEYS = ("fmt", "sep", "header", "encoding", "quote")


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


def _sep(value: str | None) -> str | None:
    # A shell passes "\\t" literally; a tab is what is meant.
    return value.replace("\\t", "\t") if value else value


def _quote(value: str | None) -> str | Literal[False] | None:
    """The quote option: None = not given, False = no quoting (``none``)."""
    if value is None:
        return None
    return False if value.lower() == "none" else value


def _read_options(o: dict[str, Any], prefix: str, names: str | None) -> dict[str, Any]:
    """One file's read options. The log's come from the plain options; an attribute file
    (``prefix`` "item_" / "user_") has its own separator, format and quote (else its
    extension or sniffed: never the log's), and inherits the log's header and encoding."""
    quote = _quote(o[f"{prefix}quote"])
    fields = {
        "format": o[f"{prefix}fmt"],
        "sep": _sep(o[f"{prefix}sep"]),
        "header": o[f"{prefix}header"] if o[f"{prefix}header"] is not None else o["header"],
        "encoding": o[f"{prefix}encoding"] or o["encoding"],
    }
    read = _drop_none(fields)
    if quote is not None:
        read["quote"] = quote or None
    if names:
        read["names"] = _split([names])
    return read


def _options_to_config(o: dict[str, Any]) -> dict[str, Any]:
    if o["interactions"] is None:
        raise _UsageError("give the interaction log file (or --config FILE)")
    for prefix, path in (("item_", "item_attrs"), ("user_", "user_attrs")):
        given = [k for k in _READ_KEYS if o[f"{prefix}{k}"] is not None]
        if o[path] is None and given:
            flags = sorted(f"--{prefix}{k}".replace("_", "-") for k in given)
            flag = "--" + path.replace("_", "-")
            raise _UsageError(f"options {flags} need the attribute file option {flag}")
    return _drop_none(
        {
            "name": o["name"],
            "k_core": o["k_core"],
            "interactions": {
                "path": str(o["interactions"]),
                "read": _read_options(o, "", o["names"]),
                **_drop_none(
                    {k: o[k] for k in ("user_col", "item_col", "time_col", "rating_col")}
                    | {
                        "min_rating": o["min_rating"],
                        "label_col": o["label_col"],
                        "timestamp_unit": o["timestamp_unit"],
                    }
                ),
            },
            "items": _attrs(
                o["item_attrs"],
                _read_options(o, "item_", o["item_names"]),
                key=o["item_key"],
                categorical=_split(o["item_categorical"]),
                multi=_multi(o["item_multi"]),
                numeric=_split(o["item_numeric"]),
                category=o["category_col"],
            ),
            "users": _attrs(
                o["user_attrs"],
                _read_options(o, "user_", o["user_names"]),
                key=o["user_key"],
                categorical=_split(o["user_categorical"]),
                multi=_multi(o["user_multi"]),
                numeric=_split(o["user_numeric"]),
            ),
        }
    )


def _summary(result: ImportResult) -> str:
    rep, ref = result.report, result.ref
    unit = f" ({rep.timestamp_unit})" if rep.timestamp_unit else ""
    lines = [
        f"{'reused' if result.reused else 'imported'} snapshot {ref.snapshot_id}: "
        f"{ref.n_users} users, {ref.n_items} items, {ref.n_interactions} interactions, "
        f"{rep.n_categories} categories",
        f"timestamps: {rep.timestamps}{unit}; ids: user {rep.id_mapping['user']}, "
        f"item {rep.id_mapping['item']}; features: {len(rep.user_features)} user, "
        f"{len(rep.item_features)} item",
    ]
    for f in rep.files:
        lines.append(
            f"{f.file} ({f.role}): read {f.rows_read}, kept {f.rows_kept}, "
            f"dropped {f.rows_dropped} lines"
        )
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
        str | None,
        typer.Option("--format", help="Log: auto, csv, tsv or parquet.", show_default="auto"),
    ] = None,
    sep: Annotated[
        str | None,
        _opt("Field separator of the log, e.g. '::' or '\\t'.", "by extension, else sniffed"),
    ] = None,
    encoding: Annotated[
        str | None, _opt("Text encoding of the log (attribute files inherit it).", "utf-8")
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header",
            help="Whether the log starts with column names (attribute files inherit it).",
            show_default="header",
        ),
    ] = None,
    quote: Annotated[str | None, _opt("Quote character of the log, or 'none'.", '"')] = None,
    names: Annotated[str | None, _opt("Comma-separated column names of the log.")] = None,
    user_col: Annotated[str | None, _opt("User ID column.", "user_id")] = None,
    item_col: Annotated[str | None, _opt("Item ID column.", "item_id")] = None,
    time_col: Annotated[
        str | None, _opt("Time column (unix time or ISO 8601).", "row order")
    ] = None,
    timestamp_unit: Annotated[
        str | None,
        typer.Option(
            help="Unit of unix times: s, ms, us, ns or auto (by magnitude); times outside "
            "1970..2100 are bad rows.",
            show_default="auto",
        ),
    ] = None,
    rating_col: Annotated[str | None, _opt("Rating column.")] = None,
    min_rating: Annotated[float | None, _opt("Keep only rows with rating >= this.")] = None,
    label_col: Annotated[str | None, _opt("0/1 label column; only positives are kept.")] = None,
    item_attrs: Annotated[Path | None, _opt("Item attribute table.")] = None,
    item_sep: Annotated[
        str | None,
        typer.Option(
            "--item-sep",
            "--items-sep",
            help="Field separator of the item table (never the log's).",
            show_default="by extension, else sniffed",
        ),
    ] = None,
    item_fmt: Annotated[
        str | None,
        typer.Option(
            "--item-format", help="Item table: auto, csv, tsv or parquet.", show_default="auto"
        ),
    ] = None,
    item_header: Annotated[
        bool | None,
        typer.Option(
            "--item-header/--item-no-header",
            help="Whether the item table starts with column names.",
            show_default="as the log",
        ),
    ] = None,
    item_encoding: Annotated[
        str | None, _opt("Text encoding of the item table.", "as the log")
    ] = None,
    item_quote: Annotated[
        str | None, _opt("Quote character of the item table, or 'none'.", '"')
    ] = None,
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
    user_sep: Annotated[
        str | None,
        typer.Option(
            "--user-sep",
            "--users-sep",
            help="Field separator of the user table (never the log's).",
            show_default="by extension, else sniffed",
        ),
    ] = None,
    user_fmt: Annotated[
        str | None,
        typer.Option(
            "--user-format", help="User table: auto, csv, tsv or parquet.", show_default="auto"
        ),
    ] = None,
    user_header: Annotated[
        bool | None,
        typer.Option(
            "--user-header/--user-no-header",
            help="Whether the user table starts with column names.",
            show_default="as the log",
        ),
    ] = None,
    user_encoding: Annotated[
        str | None, _opt("Text encoding of the user table.", "as the log")
    ] = None,
    user_quote: Annotated[
        str | None, _opt("Quote character of the user table, or 'none'.", '"')
    ] = None,
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
        int | None, typer.Option(min=1, help="Keep only the k-core.", show_default="none")
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
        # A missing input file is "not found" (3), anything else bad input (2).
        raise fail(str(e), code=3 if isinstance(e, FileNotFoundError) else 2) from None
    if as_json:
        typer.echo(
            json.dumps({"snapshot_id": result.ref.snapshot_id, **result.model_dump(mode="json")})
        )
    else:
        typer.echo(_summary(result))
