"""Machine facts of the recall HTTP service, read from ``TOWERFLOW_API_*`` environment
variables when an ``ApiSettings`` is created at the edge (the CLI's ``api`` command)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApiSettings"]


class ApiSettings(BaseSettings):
    """Where the service listens, how often it looks for a new version, request limits,
    whether it serves metrics."""

    model_config = SettingsConfigDict(env_prefix="TOWERFLOW_API_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to bind; loopback by default.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    poll_interval_s: float = Field(
        0.5, gt=0, le=3600, description="Seconds between checks of CURRENT for a new version."
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest accepted request body; larger gets 413."
    )
    recall_on_event_loop: bool = Field(
        False,
        description="Run recall on the event loop instead of the thread pool: ~1.4 ms less "
        "per request on a small catalogue (no thread hops), but one request at a time per "
        "process and /v1/health waits behind a slow search. Run several workers then.",
    )
    recall_concurrency: int | None = Field(
        None,
        ge=1,
        description="Recall searches running at once; the others wait their turn in order. "
        "None = the CPUs this process may use (affinity mask, cgroup CPU quota: "
        "core.cpus.cpu_budget). More only time-slices the same cores (every request slower, "
        "p99 worst); fewer leaves cores idle.",
    )
    metrics: bool = Field(
        True,
        description="Serve GET /metrics (Prometheus text format) and count, time and track "
        "every request for it; off, /metrics is 404 and requests pay nothing for it.",
    )
    threads: int = Field(
        1,
        ge=1,
        description="torch and Faiss threads per request. Requests already run in parallel "
        "on a thread pool, so more only oversubscribes the cores for one-user queries.",
    )
