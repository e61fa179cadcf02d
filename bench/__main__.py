"""``python -m bench``: the benchmark suite (``bench.suite``) at one scale, every step next
to the bare library; prints the markdown table and writes it with the results JSON.

Run it from the repository root (``make bench``): ``python -m`` puts the root on sys.path,
so the bench package need not be installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import apply_openmp_defaults, fail, setup_logging

__all__ = ["app", "bench"]

# Before the suite loads torch or Faiss, as the `towerflow` command does (cli.app).
apply_openmp_defaults()


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
    train_steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Steps per training run [default: 200; 1000 with --shared-cores, long "
            "enough for the adaptive thread count to settle].",
            show_default=False,
        ),
    ] = None,
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
    shared_cores: Annotated[
        bool,
        typer.Option(
            "--shared-cores",
            help="Instead of the suite: training, embedding, evaluation and recall latency "
            "on quiet cores and next to a busy co-tenant, with towerflow's thread defaults "
            "(JSON and table: bench/results/shared-<scale>.*).",
        ),
    ] = False,
    cotenant: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Busy processes of the co-tenant [default: this process's CPU budget].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Benchmark each step next to the bare library; print and save the markdown table."""
    from pydantic import ValidationError

    if shared_cores:
        _shared(scale, json_path, threads, repeats, train_steps or 1000, seed, cotenant)
        return

    from bench.suite import BenchConfig, run_suite, write_results

    setup_logging(verbose=True)
    try:
        cfg = BenchConfig(
            scale=scale,
            seed=seed,
            threads=threads,
            repeats=repeats,
            gen_repeats=gen_repeats,
            index_repeats=index_repeats,
            train_steps=train_steps or 200,
            ann_epochs=ann_epochs,
            ann_max_examples=ann_max_examples,
            e2e=e2e,
        )
    except ValidationError as e:
        raise fail(f"invalid bench options:\n{e}") from None
    results = run_suite(cfg)
    path = json_path or Path("bench") / "results" / f"bench-{scale}.json"
    md_path, text = write_results(results, path)
    typer.echo(text)
    typer.echo(f"wrote {path} and {md_path}")


def _shared(
    scale: str,
    json_path: Path | None,
    threads: int | None,
    repeats: int,
    train_steps: int,
    seed: int,
    cotenant: int | None,
) -> None:
    import json

    from bench.shared import render, run_shared
    from model.synthetic import check_scale

    setup_logging(verbose=True)
    try:
        check_scale(scale)
    except ValueError as e:
        raise fail(str(e)) from None
    res = run_shared(scale, seed, repeats, threads, cotenant, train_steps)
    path = json_path or Path("bench") / "results" / f"shared-{scale}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
    text = render(res)
    path.with_suffix(".md").write_text(text)
    typer.echo(text)
    typer.echo(f"wrote {path} and {path.with_suffix('.md')}")


app = typer.Typer(
    name="bench",
    help="towerflow's benchmark suite.",
    add_completion=False,
    rich_markup_mode=None,  # plain help text: "[default: ...]" is not a markup tag
)
app.command()(bench)

if __name__ == "__main__":
    app()
