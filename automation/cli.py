"""The ``llm-endpoints`` command.

Each sub-command is a ``@app.command()`` function. Bad input is a ``ValueError``
that names the field (the planner, catalog and spec models all raise those);
:func:`main` turns it into one ``error: <field>: ...`` line on stderr and exit
code 2, so commands just raise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from automation.control_cli import register as register_control_commands
from components import models, planner
from components.catalog import get_instance

app = typer.Typer(
    name="llm-endpoints",
    help="Deploy and plan vLLM endpoints on AWS EKS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Exit code for bad input (the same as click's usage errors).
EXIT_BAD_INPUT = 2


@app.callback()
def _root() -> None:
    """Deploy and plan vLLM endpoints on AWS EKS."""


def _console() -> Console:
    """stdout console; wide when not a terminal so tables never truncate names."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    return console


def _table(cands: list[planner.Estimate], choice: planner.Estimate | None, optimize: str) -> Table:
    order = {"cost": "$/h", "cost-per-token": "$/1M tokens", "latency": "single-stream speed"}
    table = Table(title=f"Candidates (fitting first, then by {order[optimize]})")
    table.add_column("", no_wrap=True)
    table.add_column("instance", no_wrap=True)
    table.add_column("fits", no_wrap=True)
    table.add_column("TP", justify="right")
    table.add_column("nodes", justify="right")
    table.add_column("KV tokens", justify="right")
    table.add_column("max conc.", justify="right")
    table.add_column("max seqs", justify="right")
    table.add_column("tok/s 1 stream", justify="right")
    table.add_column("tok/s total", justify="right")
    table.add_column("$/h", justify="right")
    table.add_column("$/1M tok", justify="right")
    for e in cands:
        chosen = e is choice
        table.add_row(
            "->" if chosen else "",
            e.instance_type,
            "yes" if e.fits else "no",
            str(e.tensor_parallel),
            str(e.nodes),
            f"{e.kv_tokens:,}",
            f"{e.max_concurrency:.2f}",
            str(e.max_num_seqs),
            f"{e.decode_tokens_per_s:.1f}",
            f"{e.aggregate_tokens_per_s:.1f}",
            f"{e.cost_per_hour:.3f}",
            f"{e.cost_per_million_tokens:.2f}",
            style="bold green" if chosen else (None if e.fits else "dim"),
        )
    return table


def _why(choice: planner.Estimate, cands: list[planner.Estimate], optimize: str) -> str:
    fitting = sum(1 for c in cands if c.fits)
    breakdown = ", ".join(
        f"{k.replace('_', ' ')} {v:.0f} s" for k, v in choice.cold_start_breakdown.items()
    )
    best = {"cost": "cheapest", "cost-per-token": "cheapest per token", "latency": "fastest"}
    return (
        f"Chosen: {choice.instance_type} with TP {choice.tensor_parallel}"
        f"{f' x PP {choice.pipeline_parallel}' if choice.pipeline_parallel > 1 else ''}, "
        f"the {best[optimize]} of {fitting} fitting candidates out of {len(cands)} "
        f"(${choice.cost_per_hour:.3f}/h). {choice.reason[0].upper()}{choice.reason[1:]}. "
        f"vLLM flags: {' '.join(choice.vllm_args())}. "
        f"Single stream {choice.decode_tokens_per_s:.1f} tok/s "
        f"({choice.decode_ms_per_token:.1f} ms/token), "
        f"{choice.aggregate_tokens_per_s:.1f} tok/s at concurrency {choice.concurrency} "
        f"(prefills of {planner.PROMPT_TOKENS}-token prompts included), "
        f"time to first token ~{choice.ttft_s:.2f} s for a {planner.TTFT_PROMPT_TOKENS}-token "
        f"prompt, ${choice.cost_per_million_tokens:.2f} per million output tokens. "
        f"Cold start ~{choice.cold_start_s / 60:.1f} min ({breakdown})."
    )


def _read_model_config(path: Path) -> dict[str, Any]:
    """A config.json file, parsed; errors name the file and the field."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"model_config: cannot read {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"model_config: {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"model_config: {path} must hold a JSON object (a config.json)")
    return data


def _model_id(model: str | None, config: dict[str, Any] | None, path: Path | None) -> str:
    """MODEL, else the config's ``_name_or_path``, else the file name (``owner__name``)."""
    if model:
        return model
    if config is not None and isinstance(config.get("_name_or_path"), str):
        return str(config["_name_or_path"])
    if path is not None:
        return path.stem.removesuffix(".config").replace("__", "/")
    raise ValueError("model: give MODEL (a catalog id or alias) or --model-config FILE")


@app.command()
def plan(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODEL]",
            help="Hugging Face id or catalog alias (optional with --model-config).",
        ),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option(
            "--model-config",
            help="The model's Hugging Face config.json (any model).",
            dir_okay=False,
        ),
    ] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="EC2 instance type (default: best).")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option("--max-model-len", help="Context length (default: full).")
    ] = None,
    gpu_memory_utilization: Annotated[
        float, typer.Option("--gpu-memory-utilization", help="vLLM's fraction, in (0, 1].")
    ] = 0.90,
    max_num_seqs: Annotated[
        int | None, typer.Option("--max-num-seqs", help="vLLM --max-num-seqs (default: planned).")
    ] = None,
    max_num_batched_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-num-batched-tokens", help="vLLM --max-num-batched-tokens (default: vLLM's)."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Concurrent streams for the throughput.")
    ] = 1,
    accelerator: Annotated[
        str | None, typer.Option("--accelerator", help="nvidia or neuron (default: nvidia).")
    ] = None,
    tensor_parallel: Annotated[
        int | None, typer.Option("--tensor-parallel", help="Force a TP size.")
    ] = None,
    pipeline_parallel: Annotated[
        int, typer.Option("--pipeline-parallel", help="Nodes per replica.")
    ] = 1,
    storage: Annotated[
        str, typer.Option("--storage", help="none, s3, fsx, efs or pvc (cold start).")
    ] = "none",
    optimize: Annotated[
        str,
        typer.Option(
            "--optimize", help="cost ($/h), cost-per-token ($/1M tokens) or latency (tok/s)."
        ),
    ] = "cost",
    vllm_version: Annotated[
        str,
        typer.Option(
            "--vllm-version",
            help=f"vLLM to predict: {planner.PINNED} (pinned) or {planner.RAY} (Ray image).",
        ),
    ] = planner.PINNED,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (choice + candidates) only.")
    ] = False,
) -> None:
    """Size MODEL: candidate instances, memory, speed, cost, and the choice."""
    config = _read_model_config(model_config) if model_config is not None else None
    arch = models.resolve(_model_id(model, config, model_config), config)
    inst = get_instance(instance) if instance is not None else None
    kwargs: dict[str, Any] = {
        "accelerator": accelerator,
        "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization,
        "concurrency": concurrency,
        "storage": storage,
        "instance": inst,
        "tensor_parallel": tensor_parallel,
        "pipeline_parallel": pipeline_parallel,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "optimize": optimize,
        "vllm_version": vllm_version,
    }
    cands = planner.candidates(arch, **kwargs)
    # choose() returns the first candidate when it fits; otherwise it explains.
    choice = cands[0] if cands[0].fits else None
    error: planner.PlanError | None = None
    if choice is None:
        try:
            planner.choose(arch, **kwargs)
        except planner.PlanError as e:
            error = e
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model": arch.id,
                    "vllm_version": vllm_version,
                    "optimize": optimize,
                    "choice": choice.to_dict() if choice else None,
                    "error": str(error) if error else None,
                    "candidates": [c.to_dict() for c in cands],
                },
                indent=2,
            )
        )
    else:
        console = _console()
        console.print(_table(cands, choice, optimize))
        if choice is not None:
            console.print(_why(choice, cands, optimize), highlight=False, markup=False)
    if error is not None:
        raise error


# serve, create, list, show, destroy, extend, teardown (automation/control_cli.py).
register_control_commands(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the app; bad input exits 2 with one line."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="llm-endpoints")
    except ValueError as e:
        message = " ".join(str(e).split())  # one line, whatever the source
        typer.echo(f"error: {message}", err=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
