"""The control-plane commands of ``llm-endpoints``: serve, create, list, show,
destroy, extend, teardown (registered on the app of :mod:`automation.cli`).

Except ``serve``, the commands work on the store and the state folder
directly (``LLM_ENDPOINTS_STATE_DIR``, ``LLM_ENDPOINTS_DATABASE_URL``, ...),
not through the HTTP API: whoever can run them can read the state folder, so
they act as an administrator, and they work whether a server runs or not.
They go through the same records, per-stack FIFO, stack lock and worker
processes as the API, so a CLI ``destroy`` and an API request on the same
endpoint queue behind each other instead of racing. ``create``, ``destroy``
run the operation in the foreground and stream its log (``--no-wait`` only
queues it, for a running server to pick up). Secrets are never taken on the
command line: ``--hf-token-env VAR`` names an environment variable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from automation.store import Operation
    from automation.usecases import ControlPlane, Principal

#: Exit code of a command whose operation failed, or that the state refused.
EXIT_FAILED = 1


def _open(user: str | None = None, *, planner: bool = False) -> tuple[ControlPlane, Principal]:
    """The use cases over the state folder, and the CLI's caller (an administrator)."""
    from automation.settings import Settings
    from automation.store import Store
    from automation.usecases import ControlPlane, Principal, default_planner

    settings = Settings.from_env()
    control = ControlPlane(
        settings, Store.from_settings(settings), planner=default_planner() if planner else None
    )
    return control, Principal(user or os.environ.get("USER") or "cli", admin=True)


def _follow(control: ControlPlane, op: Operation) -> int:
    """Run the operation here (unless a server takes it first) and stream its log."""
    from automation.dispatcher import Dispatcher
    from automation.store import OpStatus

    settings, store = control.settings, control.store

    dispatcher = Dispatcher(settings, store, only=[op.id])
    after = 0
    try:
        while True:
            dispatcher.tick()
            for line in store.logs(op.id, after):
                after = line.id
                typer.echo(line.line)
            current = store.get_operation(op.id)
            if current.status.terminal:
                for line in store.logs(op.id, after, 100_000):
                    typer.echo(line.line)
                break
            time.sleep(settings.poll_interval_s)
    finally:
        dispatcher.stop()
    typer.echo(
        f"operation {op.id}: {current.status}" + (f": {current.error}" if current.error else "")
    )
    return 0 if current.status is OpStatus.SUCCEEDED else EXIT_FAILED


def _refused(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(EXIT_FAILED)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    dispatch: Annotated[
        bool, typer.Option("--dispatch/--no-dispatch", help="Run operations in this process.")
    ] = True,
    fd: Annotated[
        int | None,
        typer.Option(help="Serve on this already-bound listening socket (overrides host/port)."),
    ] = None,
) -> None:
    """Run the HTTP API (uvicorn) with its dispatcher."""
    import uvicorn

    from automation.api.main import create_app

    where: dict[str, Any] = {"fd": fd} if fd is not None else {"host": host, "port": port}
    uvicorn.run(create_app(dispatch=dispatch), ws="none", proxy_headers=False, **where)


def create(
    name: Annotated[str, typer.Argument(help="Endpoint name (DNS-1123, <= 40).")],
    model: Annotated[str, typer.Argument(help="Catalog model id or alias.")],
    instance: Annotated[str | None, typer.Option(help="EC2 instance type.")] = None,
    ttl: Annotated[str | None, typer.Option(help="Time to live, e.g. 8h.")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="vLLM context length.")] = None,
    tensor_parallel: Annotated[int | None, typer.Option(help="Tensor-parallel size.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Model replicas.")] = None,
    spec_file: Annotated[
        str | None, typer.Option(help="JSON/YAML file with more spec fields (vllm, storage...).")
    ] = None,
    hf_token_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the HF token.")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Owner (default: $USER).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Run it now.")] = True,
) -> None:
    """Create an endpoint: validate, size, record, then run its ``up``."""
    from automation.store import StoreError
    from automation.usecases import InvalidRequest

    payload: dict[str, Any] = {}
    if spec_file:
        import yaml

        with open(spec_file) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"spec_file: {spec_file} must hold a mapping")
        payload.update(loaded)
    payload.update({"name": name, "model": model})
    for key, value in (
        ("instance_type", instance),
        ("ttl", ttl),
        ("tensor_parallel", tensor_parallel),
        ("replicas", replicas),
    ):
        if value is not None:
            payload[key] = value
    if max_model_len is not None:
        payload["vllm"] = {**payload.get("vllm", {}), "max_model_len": max_model_len}
    token = None
    if hf_token_env:
        token = os.environ.get(hf_token_env)
        if not token:
            raise ValueError(f"hf_token_env: ${hf_token_env} is not set")
    control, caller = _open(user, planner=True)
    try:
        op = control.create(caller, payload, hf_token=token).operation
    except InvalidRequest as e:
        raise ValueError("; ".join(e.details) or str(e)) from None
    except StoreError as e:
        raise _refused(e) from None
    typer.echo(f"endpoint {name}: operation {op.id} queued")
    if wait:
        raise typer.Exit(_follow(control, op))


def list_endpoints(
    user: Annotated[str | None, typer.Option(help="Only this owner's.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include destroyed ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List endpoints."""
    from rich.console import Console
    from rich.table import Table

    from automation.api.schemas import EndpointOut

    control, caller = _open()
    eps = control.list_endpoints(caller, include_destroyed=all_, owner=user)
    if as_json:
        typer.echo(json.dumps([EndpointOut.of(e).model_dump(mode="json") for e in eps], indent=2))
        return
    table = Table(title="Endpoints")
    for col in ("name", "owner", "status", "model", "instance", "$/h", "expires", "url"):
        table.add_column(col, no_wrap=True)
    for e in eps:
        table.add_row(
            e.name,
            e.owner,
            e.status.value,
            e.model or "",
            e.instance_type or "",
            f"{e.cost_per_hour:.3f}" if e.cost_per_hour is not None else "",
            e.expires_at.strftime("%Y-%m-%d %H:%M") if e.expires_at else "",
            e.url or "",
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


def show(name: Annotated[str, typer.Argument(help="Endpoint name.")]) -> None:
    """Show one endpoint and its last operation (JSON)."""
    from automation.api.schemas import EndpointOut
    from automation.store import StoreError

    control, caller = _open()
    try:
        ep, last = control.show(caller, name)
    except StoreError as e:
        raise _refused(e) from None
    typer.echo(json.dumps(EndpointOut.of(ep, last).model_dump(mode="json"), indent=2))


def destroy(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    user: Annotated[str | None, typer.Option(help="Requested by (default: $USER).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Run it now.")] = True,
) -> None:
    """Destroy an endpoint (queued behind whatever runs on its stack)."""
    from automation.store import StoreError

    control, caller = _open(user)
    try:
        result = control.destroy(caller, name)
    except StoreError as e:
        raise _refused(e) from None
    op = result.operation
    typer.echo(f"endpoint {name}: destroy {op.id} {'already ' if result.replayed else ''}queued")
    if wait:
        raise typer.Exit(_follow(control, op))


def extend(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    ttl: Annotated[str, typer.Argument(help="New time to live from now, e.g. 4h.")],
) -> None:
    """Set an endpoint's expiry to now + TTL (bounded by the server's maximum)."""
    from automation.store import StoreError
    from automation.usecases import InvalidRequest

    control, caller = _open()
    try:
        ep = control.extend(caller, name, ttl)
    except InvalidRequest as e:
        raise ValueError(str(e)) from None
    except StoreError as e:
        raise _refused(e) from None
    typer.echo(f"endpoint {name} now expires at {ep.expires_at}")


def api_key(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Move to a new key (the pods roll onto it).")
    ] = False,
    user: Annotated[str | None, typer.Option(help="The owner (default: $USER).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Run the rotation now.")] = True,
) -> None:
    """Print an endpoint's API key (its owner only), or rotate it."""
    from automation.store import StoreError

    control, caller = _open(user)
    try:
        if rotate:
            op = control.rotate_api_key(caller, name).operation
            typer.echo(f"endpoint {name}: key rotation {op.id} queued")
            if wait:
                raise typer.Exit(_follow(control, op))
            return
        _ep, key = control.api_key(caller, name)
    except StoreError as e:
        raise _refused(e) from None
    typer.echo(key)


def teardown(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, change nothing.")] = False,
    attempts: Annotated[int, typer.Option(help="Destroy attempts per endpoint.")] = 3,
    backoff: Annotated[float, typer.Option(help="Seconds before the first retry.")] = 30.0,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry destroy_failed ones.")
    ] = False,
) -> None:
    """Destroy expired endpoints exactly once; exit 1 if any destroy failed."""
    from automation.teardown import main as teardown_main

    args = [f"--attempts={attempts}", f"--backoff={backoff}"]
    args += ["--dry-run"] if dry_run else []
    args += ["--retry-failed"] if retry_failed else []
    raise typer.Exit(teardown_main(args))


def register(app: typer.Typer) -> None:
    """Add the control-plane commands to the ``llm-endpoints`` app."""
    app.command("serve")(serve)
    app.command("create")(create)
    app.command("list")(list_endpoints)
    app.command("show")(show)
    app.command("destroy")(destroy)
    app.command("extend")(extend)
    app.command("api-key")(api_key)
    app.command("teardown")(teardown)
