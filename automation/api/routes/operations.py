"""``/v1/operations``: show, follow (event stream) and cancel operations."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from automation.api.deps import Caller, Control, Ctx
from automation.api.routes.endpoints import E401, E404
from automation.api.schemas import OperationOut

router = APIRouter(prefix="/v1/operations", tags=["operations"])

OpId = Annotated[str, Path(max_length=36, description="operation id (a UUID)")]
#: How often a stream looks for new lines.
STREAM_POLL_S = 0.25


@router.get(
    "/{op_id}",
    response_model=OperationOut,
    summary="Show an operation",
    responses={**E401, **E404},
)
def get_operation(op_id: OpId, control: Control, caller: Caller) -> OperationOut:
    return OperationOut.of(control.visible_operation(caller, op_id))


@router.post(
    "/{op_id}/cancel",
    status_code=202,
    response_model=OperationOut,
    summary="Cancel an operation",
    description=(
        "A queued operation ends at once (`interrupted`). A running one gets SIGINT "
        "(Pulumi cancels cleanly), then SIGKILL after the grace period."
    ),
    responses={**E401, **E404},
)
def cancel_operation(op_id: OpId, control: Control, caller: Caller) -> OperationOut:
    return OperationOut.of(control.cancel(caller, op_id))


def _frame(kind: str, data: dict[str, Any], sse: bool, event_id: int | None = None) -> bytes:
    body = json.dumps({"type": kind, **data}, default=str)
    if not sse:
        return (body + "\n").encode()
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {body}\n\n".encode()


@router.get(
    "/{op_id}/events",
    summary="Follow an operation's log",
    description=(
        "Streams the operation's log lines, then one `end` event with the final status, "
        "and closes. NDJSON by default; Server-Sent Events with "
        "`Accept: text/event-stream` (resume with `Last-Event-ID`)."
    ),
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/event-stream": {}},
            "description": 'one JSON object per line: {"type": "log"|"end", ...}',
        },
        **E401,
        **E404,
    },
)
def operation_events(
    op_id: OpId,
    ctx: Ctx,
    caller: Caller,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> StreamingResponse:
    op = ctx.control.visible_operation(caller, op_id)
    sse = bool(accept and "text/event-stream" in accept)
    store = ctx.store
    limit_s = ctx.settings.op_time_limit_s + ctx.settings.cancel_grace_s + 60

    async def events() -> AsyncIterator[bytes]:
        after = last_event_id or 0
        deadline = time.monotonic() + limit_s
        while True:
            lines = await run_in_threadpool(store.logs, op.id, after, 500)
            for line in lines:
                after = line.id
                yield _frame("log", {"id": line.id, "ts": line.ts, "line": line.line}, sse, line.id)
            if len(lines) == 500:
                continue
            current = await run_in_threadpool(store.get_operation, op.id)
            if current.status.terminal:
                for line in await run_in_threadpool(store.logs, op.id, after, 10_000):
                    after = line.id
                    yield _frame(
                        "log", {"id": line.id, "ts": line.ts, "line": line.line}, sse, line.id
                    )
                yield _frame("end", {"status": current.status.value, "error": current.error}, sse)
                return
            if time.monotonic() > deadline:
                yield _frame("end", {"status": current.status.value, "error": "stream limit"}, sse)
                return
            await asyncio.sleep(STREAM_POLL_S)

    media = "text/event-stream" if sse else "application/x-ndjson"
    return StreamingResponse(events(), media_type=media, headers={"Cache-Control": "no-store"})
