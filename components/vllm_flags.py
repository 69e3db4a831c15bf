"""vLLM command-line flags: which ones the project sets itself, and how extras look.

One home for the rules about vLLM arguments, used by the spec (what a request
may pass in ``vllm.extra_args``) and by the serving components (what they
refuse in their own arguments).
"""

from __future__ import annotations

import re

#: One extra vLLM flag: ``--name`` or ``--name=value`` with a plain value.
VLLM_ARG_RE = re.compile(r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9_./:,+-]+)?$")
#: Extra flags a spec may pass.
MAX_EXTRA_ARGS = 32

#: Flags the serving components set from their own fields; extra_args may not
#: repeat them (in every serving mode).
MANAGED_FLAGS = frozenset(
    {
        "--model",
        "--served-model-name",
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--max-model-len",
        "--gpu-memory-utilization",
        "--max-num-seqs",
        "--host",
        "--port",
        "--distributed-executor-backend",
    }
)


def check_extra_args(args: list[str], field: str = "vllm.extra_args") -> list[str]:
    """Validate extra vLLM flags.

    Raises:
        ValueError: naming the field and the flag.
    """
    if len(args) > MAX_EXTRA_ARGS:
        raise ValueError(f"{field}: at most {MAX_EXTRA_ARGS} flags, got {len(args)}")
    for arg in args:
        if not isinstance(arg, str) or not VLLM_ARG_RE.fullmatch(arg):
            raise ValueError(
                f"{field}: {arg!r} is not a plain flag of the form --name or --name=value "
                "(letters, digits and _./:,+- only)"
            )
        flag = arg.split("=", 1)[0]
        if flag in MANAGED_FLAGS:
            raise ValueError(
                f"{field}: {flag} is set by its own field (vllm.max_model_len, "
                "tensor_parallel, ...) or by the server, not through extra_args"
            )
    return args
