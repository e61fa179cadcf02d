"""The FastAPI app: ``POST /v1/recall``, ``GET /v1/health``, ``GET /v1/version`` and,
unless turned off, ``GET /metrics`` (``service.metrics``).

Recall runs on the thread pool (torch and Faiss release the GIL), the cheap handlers on
the event loop; each request reads the served ``Recaller`` once. Every failure a client
can cause is a 4xx with a JSON reason; a 5xx means a bug or no version to serve (503).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from core.cpus import cpu_budget
from core.recall import InvalidRequestError, Recaller, RecallResult, UnknownUserError
from core.recall_answer import answer
from service.limits import BodySizeLimitMiddleware
from service.metrics import CONTENT_TYPE, METRICS_PATH, MetricsMiddleware, ServiceMetrics
from service.schemas import (
    ErrorResponse,
    HealthResponse,
    RecallRequest,
    RecallResponse,
    Rejection,
    ValidationErrorResponse,
    VersionResponse,
)
from service.settings import ApiSettings
from service.state import RecallService

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_NO_VERSION = "no published version is being served yet"


class _Unavailable(Exception):
    """Nothing to serve: answered 503."""


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error status codes."""
    return {
        code: {"model": ValidationErrorResponse if code == 422 else ErrorResponse} for code in codes
    }


router = APIRouter(prefix="/v1")


def _service(request: Request) -> RecallService:
    service: RecallService = request.app.state.service
    return service


def _limiter(app: FastAPI) -> anyio.CapacityLimiter:
    """The app's limit on concurrent searches, made on first use (it must be created on
    the event loop, which runs one handler step at a time, so no lock is needed)."""
    limiter: anyio.CapacityLimiter | None = app.state.limiter
    if limiter is None:
        limiter = app.state.limiter = anyio.CapacityLimiter(app.state.recall_concurrency)
    return limiter


def _serving(request: Request) -> Recaller:
    recaller = _service(request).recaller  # read once: the whole request uses this version
    if recaller is None:
        raise _Unavailable(_NO_VERSION)
    return recaller


@router.post(
    "/recall",
    response_model=RecallResponse,
    responses=_errors(400, 404, 413, 422, 503),
    summary="Top-K items for a user or a live profile",
)
async def recall(body: RecallRequest, request: Request) -> Response:
    service = _service(request)

    def call() -> tuple[Recaller, int | None, RecallResult]:
        # The version is read under the read lock and searched before it is released: an
        # in-place delta edits the shared index only between searches (service.state).
        with service.reading() as recaller:
            if recaller is None:
                raise _Unavailable(_NO_VERSION)
            user_id = (
                body.user_id if body.user_key is None else recaller.stored_user_id(body.user_key)
            )
            result = recaller.recall(
                user_id,
                body.profile,
                body.k,
                exclude_seen=body.exclude_seen,
                include_categories=body.include_categories,
                exclude_categories=body.exclude_categories,
            )
            return recaller, user_id, result

    settings: ApiSettings = request.app.state.settings
    # The thread pool lets searches overlap (Faiss and torch release the GIL) and keeps the
    # loop responsive during a slow search, at ~0.6 ms per hop on 2 cores. At most
    # recall_concurrency of them run at once: more would time-slice the same cores.
    recaller, user_id, result = (
        call()
        if settings.recall_on_event_loop
        else await anyio.to_thread.run_sync(call, limiter=_limiter(request.app))
    )
    # Serialised here rather than through a returned model: FastAPI would validate it again
    # (on another thread hop); the shape is RecallResponse, checked by the tests.
    payload = answer(recaller, result, user_id)
    return Response(json.dumps(payload, allow_nan=False), media_type="application/json")


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse}},
    summary="Serving version, and why a newer one was rejected",
)
async def health(request: Request) -> JSONResponse:
    service = _service(request)
    recaller, status = service.recaller, service.status
    last = status.last_rejection
    body = HealthResponse(
        status="ok" if recaller is not None else "unavailable",
        version=recaller.version_id if recaller is not None else None,
        reason=None if recaller is not None else _NO_VERSION,
        current_in_store=status.current_in_store,
        loaded_at=status.loaded_at,
        last_poll_at=status.last_poll_at,
        last_poll_error=status.last_poll_error,
        last_rejection=Rejection(version=last.version_id, reason=last.reason, at=last.at)
        if last is not None
        else None,
        rejected_versions=[r.version_id for r in status.rejected],
        swaps=status.swaps,
        deltas_applied=status.deltas_applied,
    )
    # 503 until a version is served, so load balancers hold traffic back.
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if recaller else 503)


@router.get(
    "/version",
    response_model=VersionResponse,
    responses=_errors(503),
    summary="The version being served",
)
async def version(request: Request) -> VersionResponse:
    recaller = _serving(request)
    manifest = recaller.manifest
    return VersionResponse(
        version=recaller.version_id,
        created_at=manifest.created_at if manifest is not None else None,
        item_count=recaller.n_items,
        user_count=len(recaller.tables.user_id),
        embedding_dim=int(recaller.index.d),
        profile_dim=recaller.profile_dim,
        index=type(recaller.index).__name__,
        loaded_at=_service(request).status.loaded_at,
        catalogue_seq=manifest.lineage.catalogue_seq if manifest is not None else None,
    )


def _detail(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=status)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    return _detail(400, str(exc))


async def _unknown_user(_: Request, exc: Exception) -> JSONResponse:
    return _detail(404, str(exc))


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _detail(503, str(exc))


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own handler echoes the input back, which fails to render for NaN (a 500);
    # location, message and type are what a client needs.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _add_metrics(app: FastAPI, service: RecallService) -> None:
    """``GET /metrics`` and the middleware feeding it, outermost so that requests refused
    before routing (413) are counted too."""
    metrics = ServiceMetrics(service, lambda: app.state.limiter, app.state.recall_concurrency)

    # async: collected on the event loop, where the search limiter may be read.
    async def scrape() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app.add_api_route(METRICS_PATH, scrape, methods=["GET"], include_in_schema=False)
    # Included routers are not plain routes of the app: their routes are listed from the
    # router itself, for requests that never reach routing.
    routes = [r for r in (*router.routes, *app.router.routes) if hasattr(r, "path")]
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)


def create_app(service: RecallService, settings: ApiSettings | None = None) -> FastAPI:
    """The recall app over ``service``, with ``/metrics`` unless ``settings.metrics`` is
    off. Its lifespan starts and stops the version watcher (without it, e.g. under an
    in-process test transport, call ``service.refresh()``)."""
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="towerflow recall",
        version="1",
        description="Two-tower candidate retrieval over the published model version, "
        "hot-swapped when a new version is published.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    if settings.recall_concurrency is None:
        budget = cpu_budget()
        app.state.recall_concurrency, why = budget.count, budget.reason
    else:
        app.state.recall_concurrency, why = settings.recall_concurrency, "explicit setting"
    log.info(
        "recall: %d searches at once (%s), %d torch / Faiss thread(s) each",
        app.state.recall_concurrency,
        why,
        settings.threads,
    )
    app.state.limiter = None
    app.include_router(router)
    app.add_exception_handler(InvalidRequestError, _invalid)
    app.add_exception_handler(UnknownUserError, _unknown_user)
    app.add_exception_handler(_Unavailable, _unavailable)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.metrics:
        _add_metrics(app, service)
    return app
