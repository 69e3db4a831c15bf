"""Dependencies of the routes: the application context and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from automation.auth import TokenRegistry
from automation.settings import Settings
from automation.store import Store
from automation.usecases import ControlPlane, Principal


@dataclass
class AppContext:
    """What the routes share (one per app)."""

    settings: Settings
    store: Store
    tokens: TokenRegistry
    control: ControlPlane


def get_ctx(request: Request) -> AppContext:
    """The application context."""
    ctx: AppContext = request.app.state.ctx
    return ctx


_bearer = HTTPBearer(auto_error=False, description="API token (see LLM_ENDPOINTS_TOKENS_FILE)")


def get_principal(
    ctx: Annotated[AppContext, Depends(get_ctx)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``; 401 otherwise."""
    principal = None
    if creds is not None and creds.scheme.lower() == "bearer" and creds.credentials:
        principal = ctx.tokens.lookup(creds.credentials)
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="missing or unknown bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def get_control(ctx: Annotated[AppContext, Depends(get_ctx)]) -> ControlPlane:
    """The use cases."""
    return ctx.control


Ctx = Annotated[AppContext, Depends(get_ctx)]
Caller = Annotated[Principal, Depends(get_principal)]
Control = Annotated[ControlPlane, Depends(get_control)]
