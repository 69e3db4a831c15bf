"""``/healthz``: liveness, without authentication."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from sqlalchemy import text

from automation.api.deps import Ctx
from automation.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Health",
    description="No authentication. `degraded` when the database does not answer.",
)
def healthz(ctx: Ctx) -> Health:
    try:
        with ctx.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db_ok = True
    except Exception:
        db_ok = False
    disp: Literal["running", "stopped", "disabled"] = "disabled"
    dispatcher = ctx.control.dispatcher
    if dispatcher is not None:
        disp = "running" if dispatcher.running else "stopped"
    return Health(
        status="ok" if db_ok else "degraded",
        database="ok" if db_ok else "error",
        dispatcher=disp,
    )
