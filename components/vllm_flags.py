"""vLLM command-line flags: which ones the server sets itself, and which a spec may pass.

A spec's ``vllm.extra_args`` are checked against an **allow-list** of tunable
flags with typed, bounded values (:data:`ALLOWED`), not against a deny-list:
vLLM's parser (``argparse`` with abbreviations) expands a unique prefix to the
full flag, so ``--hos=0.0.0.0`` would set ``--host``. Here a flag must be
spelled in full, ``--flag value`` and ``--flag=value`` are both understood, and
anything else (a prefix, a managed flag, remote code, a local path, a secret
such as ``--api-key``) is refused with the reason. Accepted flags are kept in
one canonical form, ``--flag`` or ``--flag=value``.

Every flag below exists in vLLM 0.33.0's ``vllm serve`` parser (``EngineArgs``
and the OpenAI server's ``FrontendArgs``) with the same spelling; the values are
bounded to what a shared endpoint may use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: Flags the serving components set from their own fields or the server's
#: settings; a request may never set them, in any spelling.
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
        "--api-key",
        "--hf-token",
        "--trust-remote-code",
        "--download-dir",
    }
)
#: Extra flags a spec may pass, and the longest one.
MAX_EXTRA_ARGS = 32
MAX_ARG_LEN = 128


@dataclass(frozen=True)
class Flag:
    """One flag a spec may pass.

    Attributes:
        name: The full flag (``--enable-prefix-caching``).
        kind: ``bool`` (no value), ``int``, ``float`` or ``choice``.
        lo: Smallest value (numbers).
        hi: Largest value (numbers).
        choices: The accepted values (choice).
        help: What it does, for the error message and the docs.
    """

    name: str
    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = field(default=())
    help: str = ""

    def check(self, value: str | None, where: str) -> str:
        """The canonical ``--flag[=value]``; ValueError naming ``where`` otherwise."""
        if self.kind == "bool":
            if value is not None:
                raise ValueError(f"{where}: {self.name} takes no value")
            return self.name
        if value is None or value == "":
            raise ValueError(f"{where}: {self.name} needs a value")
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(
                    f"{where}: {self.name}={value!r} is not one of {', '.join(self.choices)}"
                )
            return f"{self.name}={value}"
        try:
            number = int(value) if self.kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"{where}: {self.name} needs a {self.kind}, got {value!r}") from None
        if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
            raise ValueError(f"{where}: {self.name}={value} is outside {self.lo:g}..{self.hi:g}")
        return f"{self.name}={number}"


def _flags(*flags: Flag) -> dict[str, Flag]:
    return {f.name: f for f in flags}


#: The tunable flags a request may pass (vLLM 0.33.0 spellings).
ALLOWED: dict[str, Flag] = _flags(
    Flag("--enable-prefix-caching", "bool", help="reuse the KV cache of shared prefixes"),
    Flag("--no-enable-prefix-caching", "bool", help="turn prefix caching off"),
    Flag("--enable-chunked-prefill", "bool", help="split long prefills into chunks"),
    Flag("--no-enable-chunked-prefill", "bool", help="turn chunked prefill off"),
    Flag("--enforce-eager", "bool", help="no CUDA graphs (slower decode, faster start)"),
    Flag(
        "--max-num-batched-tokens",
        "int",
        lo=16,
        hi=131_072,
        help="tokens per scheduler step",
    ),
    Flag(
        "--kv-cache-dtype",
        "choice",
        choices=("auto", "fp8", "fp8_e4m3", "fp8_e5m2"),
        help="KV cache precision",
    ),
    Flag("--dtype", "choice", choices=("auto", "bfloat16", "float16"), help="weight dtype"),
    Flag("--seed", "int", lo=0, hi=2**31 - 1, help="sampling seed"),
    Flag("--max-logprobs", "int", lo=0, hi=100, help="most logprobs a request may ask for"),
    Flag(
        "--generation-config",
        "choice",
        choices=("auto", "vllm"),
        help="take sampling defaults from the model (auto) or vLLM",
    ),
    Flag("--enable-auto-tool-choice", "bool", help="let the model choose tools"),
    Flag(
        "--tool-call-parser",
        "choice",
        choices=("hermes", "llama3_json", "mistral", "pythonic", "openai", "qwen3_coder"),
        help="how tool calls are parsed from the output",
    ),
    Flag(
        "--reasoning-parser",
        "choice",
        choices=("deepseek_r1", "qwen3", "openai_gptoss"),
        help="how reasoning is separated from the answer",
    ),
    Flag(
        "--scheduling-policy",
        "choice",
        choices=("fcfs", "priority"),
        help="request scheduling order",
    ),
    Flag(
        "--long-prefill-token-threshold",
        "int",
        lo=0,
        hi=131_072,
        help="prefills longer than this count as long",
    ),
    Flag("--disable-log-stats", "bool", help="no periodic stats lines"),
    Flag(
        "--uvicorn-log-level",
        "choice",
        choices=("critical", "error", "warning", "info"),
        help="the HTTP server's log level",
    ),
)


def _managed_spelling(flag: str) -> str | None:
    """The managed flag ``flag`` names: itself, or one it abbreviates (argparse expands
    unique prefixes, so any prefix that could reach a managed flag is refused)."""
    for managed in MANAGED_FLAGS:
        if managed == flag or (len(flag) > 2 and managed.startswith(flag)):
            return managed
    return None


def parse_extra_args(args: Sequence[str], field: str = "vllm.extra_args") -> list[str]:
    """Validate extra vLLM flags against the allow-list; return them in canonical form.

    Args:
        args: ``--flag``, ``--flag=value`` or ``--flag``, ``value`` items.
        field: The field named in errors.

    Raises:
        ValueError: naming the field, the flag and why (or what is allowed).
    """
    if len(args) > MAX_EXTRA_ARGS:
        raise ValueError(f"{field}: at most {MAX_EXTRA_ARGS} items, got {len(args)}")
    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if not isinstance(arg, str) or len(arg) > MAX_ARG_LEN:
            raise ValueError(f"{field}: each item is a string of at most {MAX_ARG_LEN} characters")
        if not arg.startswith("--") or not arg[2:3].isalpha():
            raise ValueError(f"{field}: {arg!r} is not a --flag (values follow their flag)")
        name, eq, value = arg.partition("=")
        managed = _managed_spelling(name)
        if managed is not None:
            raise ValueError(
                f"{field}: {name} is set by its own field (vllm.max_model_len, tensor_parallel, "
                f"...) or by the server ({managed}), not through extra_args"
            )
        flag = ALLOWED.get(name)
        if flag is None:
            near = [f for f in ALLOWED if f.startswith(name)]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(
                f"{field}: {name} is not a flag a request may set{hint}; allowed: "
                + ", ".join(sorted(ALLOWED))
            )
        if not eq and flag.kind != "bool" and i < len(items) and not items[i].startswith("--"):
            value, eq = items[i], "="
            i += 1
        out.append(flag.check(value if eq else None, field))
    if len({a.split("=", 1)[0] for a in out}) != len(out):
        raise ValueError(f"{field}: a flag is given twice")
    return out


def flag_to_kwarg(flag: str) -> tuple[str, object]:
    """A flag as an engine keyword argument (Ray Serve LLM's ``engine_kwargs``), typed.

    ``--enable-prefix-caching`` -> (``enable_prefix_caching``, True),
    ``--no-enable-prefix-caching`` -> (``enable_prefix_caching``, False),
    ``--max-num-batched-tokens=8192`` -> (``max_num_batched_tokens``, 8192).
    """
    name, _, raw = flag.removeprefix("--").partition("=")
    if not raw:
        if f"--{name}" in ALLOWED and name.startswith("no-"):
            return name.removeprefix("no-").replace("-", "_"), False
        return name.replace("-", "_"), True
    key = name.replace("-", "_")
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    return key, raw
