"""The control plane's HTTP API: ``create_app`` and its lifespan.

The lifespan opens the store, loads the API tokens and starts the dispatcher
(which first recovers operations a crash left ``running``). Stopping the app
stops dispatching only: worker processes are independent sessions that finish
their operation and record it, and the next dispatcher adopts anything still
running.

Every error response has one shape (:class:`~automation.api.schemas.ErrorBody`)
and never echoes request input back (FastAPI's default 422 body would,
``hf_token`` included).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from automation.api.deps import AppContext
from automation.api.limits import RequestLimits
from automation.api.routes import endpoints, health, operations
from automation.api.schemas import ErrorBody
from automation.auth import TokenRegistry
from automation.dispatcher import Dispatcher, Launcher
from automation.settings import Settings
from automation.store import Conflict, IdempotencyMismatch, NotFound, QuotaExceeded, Store
from automation.usecases import ControlPlane, InvalidRequest, Planner, default_planner

log = logging.getLogger("llm_endpoints.api")

_DEFAULT = object()


def _error(
    status: int,
    code: str,
    message: str,
    details: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "details": details or []}},
        headers=headers,
    )


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    422: "invalid_request",
    429: "quota_exceeded",
}


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail: Any = exc.detail
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (not UTF-8 JSON text): an
            # invalid request like any malformed JSON, so one documented status.
            return _error(422, "invalid_request", "the request body is not UTF-8 JSON text")
        code = _CODES.get(exc.status_code, "error")
        if isinstance(detail, dict):
            return _error(
                exc.status_code,
                str(detail.get("code", code)),
                str(detail.get("message", "")),
                [str(d) for d in detail.get("details", [])],
                getattr(exc, "headers", None),
            )
        message = str(detail)
        details = message.splitlines() if exc.status_code == 422 else []
        return _error(
            exc.status_code,
            code,
            message.splitlines()[0] if message else code,
            details,
            getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        lines = []
        for e in exc.errors():
            # Location and message only: the offending input is never echoed.
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body",))
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            named = re.match(r"^[a-z_][a-z0-9_.]*: ", msg)  # validators name their field
            lines.append(f"{loc}: {msg}" if loc and not named else msg)
        return _error(422, "invalid_request", "invalid request", lines)

    @app.exception_handler(NotFound)
    async def not_found(_req: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return _error(409, "conflict", str(exc))

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_req: Request, exc: InvalidRequest) -> JSONResponse:
        return _error(422, exc.code, str(exc), exc.details)

    @app.exception_handler(QuotaExceeded)
    async def quota(_req: Request, exc: QuotaExceeded) -> JSONResponse:
        return _error(429, "quota_exceeded", str(exc), [str(exc)])

    @app.exception_handler(IdempotencyMismatch)
    async def idem(_req: Request, exc: IdempotencyMismatch) -> JSONResponse:
        return _error(422, "idempotency_key_reused", str(exc))

    @app.exception_handler(Exception)
    async def internal(_req: Request, exc: Exception) -> JSONResponse:
        # The type only: an exception's text may hold request data.
        log.error("internal error: %s", type(exc).__name__)
        return _error(500, "internal", "internal error")


def create_app(
    settings: Settings | None = None,
    *,
    planner: Planner | object | None = _DEFAULT,
    dispatch: bool = True,
    launcher: Launcher | None = None,
    store_factory: Callable[[Settings], Store] | None = None,
) -> FastAPI:
    """Build the API.

    Args:
        settings: Default :meth:`Settings.from_env`.
        planner: Sizes a spec, raising ValueError with the numbers when it does
            not fit; default ``components.planner.plan_for_spec``; None: skip.
        dispatch: Run a dispatcher in this process (off for API-only replicas
            and request-level tests).
        launcher: Starts worker processes (tests); default a subprocess.
        store_factory: Opens the store; default :meth:`Store.from_settings`.
    """
    settings = settings or Settings.from_env()
    chosen: Planner | None = default_planner() if planner is _DEFAULT else planner  # type: ignore[assignment]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = (store_factory or Store.from_settings)(settings)
        tokens = TokenRegistry(settings)
        if not len(tokens):
            log.warning("no API tokens configured: every request but /healthz gets 401")
        dispatcher = Dispatcher(settings, store, launcher=launcher) if dispatch else None
        control = ControlPlane(settings, store, planner=chosen, dispatcher=dispatcher)
        app.state.ctx = AppContext(settings, store, tokens, control)
        if dispatcher is not None:
            await run_in_threadpool(dispatcher.start)
        try:
            yield
        finally:
            if dispatcher is not None:
                await run_in_threadpool(dispatcher.stop)
            store.close()

    app = FastAPI(
        title="llm-endpoints control plane",
        version="1",
        summary="Self-service vLLM endpoints, one Pulumi stack each.",
        description=(
            "Every route but `/healthz` needs `Authorization: Bearer <token>`. Users see "
            "only their own endpoints (others' are 404); admins see all. Changes are "
            "queued operations: `202` with the operation to follow, never a deployment "
            "inside the request."
        ),
        lifespan=lifespan,
        responses={
            413: {"description": "request body over the server's limit", "model": ErrorBody},
            431: {"description": "request headers over 16 KiB", "model": ErrorBody},
            500: {"description": "internal error", "model": ErrorBody},
        },
    )
    _install_handlers(app)

    def registry() -> TokenRegistry | None:
        ctx = getattr(app.state, "ctx", None)
        return None if ctx is None else ctx.tokens

    # Outermost: sizes and the token are checked before anything reads the body.
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes, tokens=registry)
    app.include_router(health.router)
    app.include_router(endpoints.router)
    app.include_router(operations.router)
    return app
