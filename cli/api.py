"""``towerflow api``: the HTTP recall service (``service/``, FastAPI) under uvicorn.

Register with ``app.command("api")(api_command)``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.options import RootOpt, fail, open_store, setup_logging

__all__ = ["api_command"]


def api_command(
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
    recall_concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Searches running at once; others queue [default: the CPUs this process may use].",
            show_default=False,
        ),
    ] = None,
    metrics: Annotated[
        bool | None,
        typer.Option(
            "--metrics/--no-metrics",
            help="Serve GET /metrics (Prometheus) and instrument requests [default: on].",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve recall over HTTP (FastAPI under uvicorn); swaps to each newly published,
    verified version. Settings also come from TOWERFLOW_API_* variables; options win."""
    import uvicorn
    from pydantic import ValidationError

    from core.config import validation_summary
    from core.threads import apply_threads
    from service import ApiSettings, RecallService, create_app

    setup_logging(verbose=log_level.lower() in {"info", "debug", "trace"})
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "poll_interval_s": poll_interval,
        "threads": threads,
        "recall_concurrency": recall_concurrency,
        "metrics": metrics,
    }
    try:
        settings = ApiSettings(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as e:
        raise fail(f"invalid api settings: {validation_summary(e)}") from None
    # Requests run in parallel on uvicorn's thread pool; one thread per op avoids
    # oversubscribing the cores (torch and Faiss each bring an OpenMP runtime).
    apply_threads(settings.threads)
    service = RecallService(open_store(root), poll_interval_s=settings.poll_interval_s)
    uvicorn.run(
        create_app(service, settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        access_log=access_log,
    )
