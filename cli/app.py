"""The ``towerflow`` command line: run the nightly flow, query, serve, list and roll back
versions.

Heavy imports (torch, Prefect) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from cli.evaluate import evaluate_command
from cli.importing import import_command
from cli.options import JsonOpt, RootOpt
from cli.report import report_command

if TYPE_CHECKING:
    from storage import VersionInfo, VersionStore
    from core.config import NightlyConfig
    from core.recall import Recaller

__all__ = ["app", "load_config"]

app = typer.Typer(
    name="towerflow",
    help="Two-tower candidate retrieval: train, index, publish and query versions.",
    no_args_is_help=True,
    add_completion=False,
)


# Prefect defaults that matter offline and on small machines (see README): no telemetry,
# and room for the temporary server's cold start. The environment still wins.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "model,storage,tasks,towerflow",
}


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP call to Prefect's API drowns the run's own messages.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def _store(root: Path | None) -> VersionStore:
    from storage import Layout, StorageSettings, VersionStore

    settings = StorageSettings()
    resolved = (root or settings.root).expanduser().resolve()
    return VersionStore(Layout(resolved), keep_versions=settings.keep_versions)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def load_config(path: Path | None, overrides: dict[str, Any]) -> NightlyConfig:
    """NightlyConfig from a YAML/JSON file (optional) with dotted-key ``overrides`` applied.

    Raises ValueError naming the file and the invalid field.
    """
    from pydantic import ValidationError

    from core.config import NightlyConfig

    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read config {path}: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config {path}: expected a mapping at the top level")
        raw = loaded or {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return NightlyConfig.model_validate(raw)
    except ValidationError as e:
        where = f"config {path}" if path else "options"
        raise ValueError(f"invalid {where}:\n{e}") from e


_FAMILIES = ("recall", "ndcg", "hit_rate", "mrr")
_RANKERS = (
    "model",
    "popularity",
    "ease",
    "itemknn",
    "oracle",
    "random",
    "category popularity",
    "user's categories",
)


def _metrics_table(metrics: dict[str, Any]) -> str:
    """Rankers as rows (model first), metrics as columns grouped by family then K."""
    rankers: dict[str, dict[str, float]] = metrics["rankers"]
    names = sorted(
        (k for k in next(iter(rankers.values())) if k.split("@")[0] in _FAMILIES),
        key=lambda n: (_FAMILIES.index(n.split("@")[0]), int(n.split("@")[1])),
    )
    order = sorted(rankers, key=lambda r: _RANKERS.index(r) if r in _RANKERS else len(_RANKERS))
    width = max(len(n) for n in names) + 2
    first = max(12, *(len(r) + 2 for r in rankers))
    lines = ["ranker".ljust(first) + "".join(n.rjust(width) for n in names)]
    for ranker in order:
        values = rankers[ranker]
        lines.append(ranker.ljust(first) + "".join(f"{values[n]:.4f}".rjust(width) for n in names))
    return "\n".join(lines)


@app.command()
def run(
    scale: Annotated[
        str | None, typer.Option(help="Synthetic data scale: tiny, small, medium, large.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML/JSON file of nightly parameters.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Data generator seed.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch / Faiss threads.")] = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the nightly flow once, in-process (Prefect's temporary server), and publish."""
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if os.environ.get("PREFECT_HOME"):
        # Prefect creates its home without parents and then fails to start its server.
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    _setup_logging(verbose=not as_json)
    try:
        cfg = load_config(
            config,
            {
                "data.scale": scale,
                "data.seed": seed,
                "train.epochs": epochs,
                "runtime.threads": threads,
                "runtime.storage_root": str(root) if root else None,
            },
        )
    except ValueError as e:
        raise _fail(str(e)) from None

    import time

    from prefect import tags

    from flows.nightly import nightly
    from storage import VersionFiles, read_json
    from cli.progress import progress_bars

    start = time.perf_counter()
    with (
        tags("towerflow", "nightly", "cli", f"scale-{cfg.data.scale}"),
        progress_bars(enabled=not as_json),
    ):
        version_id = nightly(cfg)
    seconds = time.perf_counter() - start
    store = _store(Path(cfg.runtime.storage_root) if cfg.runtime.storage_root else root)
    metrics = read_json(store.open_version(version_id).file(VersionFiles.METRICS))
    if as_json:
        typer.echo(json.dumps({"version": version_id, "seconds": seconds, "metrics": metrics}))
        return
    typer.echo(f"\npublished version {version_id} in {seconds:.1f} s")
    typer.echo(f"test metrics ({metrics['n_users']} users, {metrics['n_items']} items):")
    typer.echo(_metrics_table(metrics))
    rankers = metrics["rankers"]
    gate = metrics["gate_metric"]
    model = rankers["model"][gate]
    typer.echo(f"\nmodel {gate}: {model / max(rankers['popularity'][gate], 1e-12):.2f}x popularity")
    if "oracle" in rankers:
        typer.echo(f"model {gate}: {model / max(rankers['oracle'][gate], 1e-12):.0%} of the oracle")
    cold = metrics.get("cold_start")
    if cold:
        typer.echo(
            f"\ncold start: {cold['n_items']} items first seen at test time, ranked among "
            f"themselves for {cold['n_users']} users (content features only):"
        )
        typer.echo(_metrics_table({"rankers": cold["rankers"]}))


@app.command()
def recommend(
    user_id: Annotated[
        str, typer.Option("--user-id", help="Raw user ID (as in the data, e.g. 42 or 'u-42').")
    ],
    k: Annotated[int, typer.Option("--k", min=1, help="How many items.")] = 10,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top-K items for a user from the CURRENT version (raw IDs in and out)."""
    from storage import NoCurrentVersionError
    from core.recall import Recaller, UnknownUserError

    try:
        recaller = Recaller.load(_store(root))
        stored = _stored_user_id(recaller, user_id)
        recs = recaller.recommend(stored, k)
    except (NoCurrentVersionError, UnknownUserError) as e:
        raise _fail(str(e).strip("'\"")) from None
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


def _stored_user_id(recaller: Recaller, raw: str) -> int:
    """The stored int64 ID of a raw user ID (through the version's map for imported data
    whose IDs are not integers); UnknownUserError when there is none."""
    from core.recall import UnknownUserError

    if recaller.raw_ids is not None:
        stored = recaller.raw_ids.user(raw)
        if stored is None:
            raise UnknownUserError(f"user {raw!r} is not in version {recaller.version_id}")
        return stored
    try:
        return int(raw)
    except ValueError:
        raise UnknownUserError(
            f"user {raw!r} is not in version {recaller.version_id} (its user IDs are integers)"
        ) from None


@app.command()
def api(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind [default: 127.0.0.1].", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port [default: 8000].", show_default=False)
    ] = None,
    root: RootOpt = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between checks for a new version [default: 0.5].", show_default=False
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch / Faiss threads [default: 1].", show_default=False)
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve recall over HTTP (FastAPI under uvicorn); swaps to each newly published,
    verified version. Settings also come from TOWERFLOW_API_* variables; options win."""
    import torch
    import uvicorn
    from pydantic import ValidationError

    from model.index import configure_threads
    from service import ApiSettings, RecallService, create_app

    _setup_logging(verbose=log_level.lower() in {"info", "debug", "trace"})
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "poll_interval_s": poll_interval,
        "threads": threads,
    }
    try:
        settings = ApiSettings(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as e:
        raise _fail(f"invalid api settings:\n{e}") from None
    # Requests run in parallel on uvicorn's thread pool; one thread per op avoids
    # oversubscribing the cores (torch and Faiss each bring an OpenMP runtime).
    torch.set_num_threads(settings.threads)
    configure_threads(settings.threads)
    service = RecallService(_store(root), poll_interval_s=settings.poll_interval_s)
    uvicorn.run(
        create_app(service, settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        access_log=access_log,
    )


@app.command()
def versions(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """List published versions, newest first; '*' marks CURRENT."""
    infos = _store(root).list_versions()
    if as_json:
        typer.echo(json.dumps([_version_json(v) for v in infos]))
        return
    if not infos:
        typer.echo("no published versions")
        return
    for v in infos:
        mark = "*" if v.is_current else " "
        typer.echo(f"{mark} {v.version_id}  created {v.created_at}  parent {v.parent}")


def _version_json(info: VersionInfo) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(info)


@app.command()
def rollback(
    version: Annotated[str, typer.Argument(help="Version id to make CURRENT again.")],
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a previous (kept, checksum-valid) version CURRENT again."""
    from storage import CorruptVersionError, PublishConflictError, VersionNotFoundError

    store = _store(root)
    before = store.current()
    try:
        store.rollback(version, expected_current=before)
    except (VersionNotFoundError, CorruptVersionError, PublishConflictError) as e:
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps({"previous": before, "current": version}))
    else:
        typer.echo(f"CURRENT: {before} -> {version}")


@app.command()
def bench(
    scale: Annotated[
        str, typer.Option(help="Synthetic data scale: tiny, small, medium, large.")
    ] = "small",
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Results JSON; the markdown table is written next to it (.md) "
            "[default: bench/results/bench-<scale>.json].",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="torch / Faiss threads [default: all cores].", show_default=False),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per side.")] = 3,
    gen_repeats: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Data generation runs [default: repeats; 1 at medium and large].",
            show_default=False,
        ),
    ] = None,
    index_repeats: Annotated[
        int | None,
        typer.Option(
            min=1, help="Index builds per side [default: repeats; 1 at large].", show_default=False
        ),
    ] = None,
    train_steps: Annotated[int, typer.Option(min=1, help="Steps per training run.")] = 200,
    ann_epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Epochs of the model behind the online figures [default: by scale].",
            show_default=False,
        ),
    ] = None,
    ann_max_examples: Annotated[
        int | None,
        typer.Option(min=2, help="Cap on that model's examples per epoch.", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the data, models and samples.")] = 0,
    e2e: Annotated[
        bool, typer.Option("--e2e/--no-e2e", help="Also time `towerflow run` (long at large).")
    ] = True,
) -> None:
    """Benchmark each step next to the bare library; print and save the markdown table."""
    from pydantic import ValidationError

    _setup_logging(verbose=True)
    try:
        from bench.suite import BenchConfig, run_suite, write_results
    except ModuleNotFoundError as e:
        if e.name != "bench":
            raise
        raise _fail(
            "the 'bench' package is not importable: run `python -m towerflow bench` from the "
            "repository root (or install a build whose packages include 'bench*')"
        ) from None
    try:
        cfg = BenchConfig(
            scale=scale,
            seed=seed,
            threads=threads,
            repeats=repeats,
            gen_repeats=gen_repeats,
            index_repeats=index_repeats,
            train_steps=train_steps,
            ann_epochs=ann_epochs,
            ann_max_examples=ann_max_examples,
            e2e=e2e,
        )
    except ValidationError as e:
        raise _fail(f"invalid bench options:\n{e}") from None
    results = run_suite(cfg)
    path = json_path or Path("bench") / "results" / f"bench-{scale}.json"
    md_path, text = write_results(results, path)
    typer.echo(text)
    typer.echo(f"wrote {path} and {md_path}")


# `towerflow import`: real interaction logs into a data snapshot (its own module: many options).
app.command("import")(import_command)
# `towerflow evaluate [--ablation]`: train variants on a snapshot, one table with baselines.
app.command("evaluate")(evaluate_command)
app.command("report")(report_command)

# New items between nightly runs (cli/items.py): send item events, serve the flows.
from cli.items import (  # noqa: E402
    add_items_command,
    retire_items_command,
    serve_command,
)

app.command("add-items")(add_items_command)
app.command("retire-items")(retire_items_command)
app.command("serve")(serve_command)
