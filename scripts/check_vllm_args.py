"""Check every vLLM argument list the project emits against the pinned vLLM itself.

Run by a person, not by the unit tests (it installs vLLM, ~10 GB):

    .venv/bin/python scripts/check_vllm_args.py [--vllm 0.33.0] [--json results.json]

What it does:

1. Creates a throwaway virtual environment outside the repository
   (``~/.cache/llm-endpoints/vllm-check-<version>``) and ``pip install
   vllm==<version>`` into it, unless it is already there. No GPU is needed.
2. Collects the argument lists, in this interpreter:

   * every endpoint stack in ``stacks/``: the spec is planned
     (``components.planner.plan_for_spec``) and built
     (``components.endpoint.build_endpoint``) under Pulumi mocks, and the vLLM
     arguments are read back from the Deployment's container, the
     LeaderWorkerSet leader's script, or the RayService's ``engine_kwargs``;
   * for every shipped model, the planner's choice (``Estimate.vllm_args()``).

3. Runs, in the vLLM environment, vLLM's own code on each: the ``vllm serve``
   parser (``vllm.entrypoints.common.cli_args.make_arg_parser`` with
   ``validate_parsed_serve_args``), ``AsyncEngineArgs.from_cli_args`` and
   ``create_engine_config``. vLLM needs a device to build its config, so the
   CUDA platform is simulated with the planned GPU's name, compute capability,
   memory and count (a stub ``libcuda.so.1`` satisfies the extension's link; no
   CUDA call is made). ``--model`` points at a temporary directory holding the
   model's ``config.json`` from ``components/models/configs`` (no Hub access).
   RayService ``engine_kwargs`` are checked as Ray Serve LLM checks them (every
   key an ``AsyncEngineArgs`` field) and then built the same way.
4. Prints one row per argument list: parsed, engine config built, and the
   batch vLLM resolved next to what the planner assumed. Exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path.home() / ".cache" / "llm-endpoints"

#: Runs inside the vLLM environment: reads the cases on stdin, prints results.
CHECKER = r'''
import json, os, sys, tempfile, traceback
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
# vllm/_C links libcuda.so.1; a stub satisfies the link and lazy binding keeps
# any CUDA symbol unresolved until called (none is).
sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_GLOBAL)
import vllm
import vllm.platforms as platforms
from vllm.platforms.cuda import CudaPlatformBase
from vllm.platforms.interface import DeviceCapability

GPU = {"name": "NVIDIA H100 80GB HBM3", "sm": 90, "total": 80 << 30, "count": 8}

class Simulated(CudaPlatformBase):
    """The CUDA platform with the planned GPU's facts and no driver calls."""
    @classmethod
    def get_device_capability(cls, device_id=0):
        return DeviceCapability(GPU["sm"] // 10, GPU["sm"] % 10)
    @classmethod
    def get_device_name(cls, device_id=0):
        return GPU["name"]
    @classmethod
    def get_device_uuid(cls, device_id=0):
        return "GPU-simulated"
    @classmethod
    def get_device_total_memory(cls, device_id=0):
        return GPU["total"]
    @classmethod
    def is_fully_connected(cls, ids):
        return True
    @classmethod
    def device_count(cls):
        return GPU["count"]
    @classmethod
    def get_device_numa_node(cls, device_id=0):
        return None
    @classmethod
    def get_all_device_numa_nodes(cls):
        return None
    @classmethod
    def device_control_id_to_physical_device_id(cls, device_id):
        return int(device_id)

platforms.current_platform = Simulated()

from dataclasses import fields
from vllm.engine.arg_utils import AsyncEngineArgs
try:  # 0.33
    from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # 0.29
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.usage.usage_lib import UsageContext
from vllm.utils.argparse_utils import FlexibleArgumentParser

def summary(cfg):
    sched, comp = cfg.scheduler_config, cfg.compilation_config
    sizes = getattr(comp, "cudagraph_capture_sizes", None) or []
    return {
        "max_model_len": cfg.model_config.max_model_len,
        "tensor_parallel": cfg.parallel_config.tensor_parallel_size,
        "pipeline_parallel": cfg.parallel_config.pipeline_parallel_size,
        "max_num_seqs": sched.max_num_seqs,
        "max_num_batched_tokens": sched.max_num_batched_tokens,
        "gpu_memory_utilization": cfg.cache_config.gpu_memory_utilization,
        "block_size": cfg.cache_config.block_size,
        "capture_sizes": len(sizes),
    }

def error(e):
    return f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"

results = []
work = tempfile.mkdtemp(prefix="vllm-check-")
for i, case in enumerate(json.load(sys.stdin)):
    GPU.update(case["gpu"])
    model_dir = os.path.join(work, f"model{i}")
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(case["config"], f)
    out = {"name": case["name"], "parsed": False, "engine": None, "resolved": None}
    try:
        if case["kind"] == "engine_kwargs":
            kwargs = dict(case["engine_kwargs"])
            known = {f.name for f in fields(AsyncEngineArgs)}
            unknown = sorted(set(kwargs) - known)
            if unknown:
                raise ValueError(f"Unknown engine argument(s) {unknown} (Ray Serve rejects these)")
            out["parsed"] = True
            engine_args = AsyncEngineArgs(model=model_dir, **kwargs)
        else:
            argv = [model_dir if a == "@MODEL@" else a for a in case["argv"]]
            parser = make_arg_parser(FlexibleArgumentParser())
            args = parser.parse_args(argv)
            validate_parsed_serve_args(args)
            out["parsed"] = True
            engine_args = AsyncEngineArgs.from_cli_args(args)
        if not case.get("engine", True):
            out["engine"] = "n/a"
            results.append(out)
            continue
        try:
            cfg = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
            out["engine"] = "ok"
            out["resolved"] = summary(cfg)
        except Exception as e:
            out["engine"] = error(e)
    except SystemExit as e:
        out["error"] = f"argparse exited ({e.code})"
    except Exception as e:
        out["error"] = error(e)
    results.append(out)
print("@@RESULTS@@" + json.dumps({"vllm": vllm.__version__, "results": results}))
'''


def ensure_venv(version: str, path: Path, install: bool) -> Path:
    """The venv's python with vllm==version installed (installs it if needed)."""
    python = path / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('vllm'))"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    if not install:
        raise SystemExit(f"{path} has no vllm=={version}; run without --no-install")
    print(f"installing vllm=={version} into {path} (a few GB, several minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"vllm=={version}"], check=True)
    return python


def stub_libcuda() -> Path:
    """A directory with an empty ``libcuda.so.1`` (built with the system C compiler)."""
    folder = CACHE / "libcuda-stub"
    lib = folder / "libcuda.so.1"
    if not lib.exists():
        folder.mkdir(parents=True, exist_ok=True)
        src = folder / "stub.c"
        src.write_text("int llm_endpoints_libcuda_stub(void) { return 0; }\n")
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(lib), str(src)],
            check=True,
        )
    return folder


# --- Collecting the argument lists (this interpreter) -----------------------------


def _model_config(model_id: str) -> dict[str, Any]:
    """The config.json vLLM should read for a shipped model."""
    from components import models

    for entry in models.ENTRIES:
        if model_id in (entry.id, *entry.aliases):
            config = {**models.read_config(entry.file), **entry.overrides}
            if entry.quant_file:
                scheme = models.read_config(entry.quant_file)["quantization"]
                config["quantization_config"] = {"quant_method": "modelopt", **scheme}
            return config
    raise KeyError(model_id)


def _gpu(instance_type: str) -> dict[str, Any]:
    from components.catalog import get_instance

    inst = get_instance(instance_type)
    chip = inst.chip
    name = {"NVIDIA H100 80GB": "NVIDIA H100 80GB HBM3"}.get(chip.name, chip.name)
    return {
        "name": name,
        "sm": chip.sm or 80,
        "total": int(chip.usable_gib * 2**30),
        "count": inst.count,
    }


def _with_model(argv: list[str]) -> list[str]:
    """The argument list with ``--model``'s value replaced by the local model dir."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--model" and i + 1 < len(out):
            out[i + 1] = "@MODEL@"
        elif a.startswith("--model="):
            out[i] = "--model=@MODEL@"
    return out


def _expect(plan: Any) -> dict[str, Any]:
    return {
        "max_model_len": plan.max_model_len,
        "max_num_seqs": plan.max_num_seqs,
        "max_num_batched_tokens": plan.max_num_batched_tokens,
    }


#: Values for the Kubernetes ``$(VAR)`` substitutions in emitted arguments.
_SUBSTITUTE = {"LWS_LEADER_ADDRESS": "10.0.0.1", "LWS_WORKER_INDEX": "1"}


def _vllm_argv(command: list[str], args: list[str]) -> list[str] | None:
    """The arguments after ``vllm serve`` / ``-m vllm.entrypoints...``, or None."""
    words = [*command, *args]
    for i, w in enumerate(words):
        if w == "serve" and i and words[i - 1].endswith("vllm"):
            argv = words[i + 1 :]
            break
        if w.startswith("vllm.entrypoints"):
            argv = words[i + 1 :]
            break
    else:
        return None
    for key, value in _SUBSTITUTE.items():
        argv = [a.replace(f"$({key})", value) for a in argv]
    return argv


def _emitted(resources: list[Any], unwrap: Any) -> list[tuple[str, str, Any, Any]]:
    """(role, kind, argv or engine_kwargs, as emitted) of each vLLM server recorded."""
    import yaml

    found: list[tuple[str, str, Any, Any]] = []
    for r in resources:
        inputs = unwrap(r.inputs)
        kind = inputs.get("kind")
        pods: list[tuple[str, dict[str, Any]]] = []
        if kind == "Deployment":
            pods = [("", inputs["spec"]["template"]["spec"])]
        elif kind == "LeaderWorkerSet":
            lws = inputs["spec"]["leaderWorkerTemplate"]
            pods = [
                ("leader", lws["leaderTemplate"]["spec"]),
                ("worker", lws["workerTemplate"]["spec"]),
            ]
        elif kind == "RayService":
            serve = yaml.safe_load(inputs["spec"]["serveConfigV2"])
            for llm in serve["applications"][0]["args"]["llm_configs"]:
                found.append(("", "engine_kwargs", llm["engine_kwargs"], llm["engine_kwargs"]))
        for role, pod in pods:
            for c in pod.get("containers", []):
                command, args = list(c.get("command") or []), list(c.get("args") or [])
                argv = _vllm_argv(command, args)
                if argv is None and args and "vllm" in args[-1]:  # a shell script
                    line = next(x for x in args[-1].splitlines() if "vllm" in x)
                    argv = _vllm_argv(shlex.split(line), [])
                if argv is not None:
                    found.append((role, "cli", argv, [*command, *args]))
    return found


def _from_scripts(spec: Any, plan: Any) -> list[tuple[str, str, Any, Any]]:
    """The arguments ``components.serving.scripts`` gives for a plan (when building fails)."""
    import inspect

    import yaml

    from components.serving import scripts

    common = {
        "tensor_parallel": plan.tensor_parallel,
        "pipeline_parallel": plan.pipeline_parallel,
        "max_model_len": plan.max_model_len,
        "gpu_memory_utilization": plan.gpu_memory_utilization,
        "max_num_seqs": spec.vllm.max_num_seqs or plan.max_num_seqs,
        "extra_args": tuple(spec.vllm.extra_args),
    }
    if spec.serving.value == "ray-service":
        config = scripts.serve_config(
            model_id=plan.model_id, model_source=f"/models/{plan.model_id}", replicas=1, **common
        )
        llm = yaml.safe_load(config)["applications"][0]["args"]["llm_configs"][0]
        return [("", "engine_kwargs", llm["engine_kwargs"], llm["engine_kwargs"])]
    kwargs = {"model": f"/models/{plan.model_id}", "served_model_name": plan.model_id, **common}
    if spec.serving.value == "leader-worker-set":
        kwargs["distributed_executor_backend"] = "ray"
    allowed = inspect.signature(scripts.vllm_args).parameters
    argv = scripts.vllm_args(**{k: v for k, v in kwargs.items() if k in allowed})
    return [("", "cli", argv, argv)]


def stack_cases() -> list[dict[str, Any]]:
    """Every endpoint stack, built under Pulumi mocks; the vLLM arguments it emits."""
    import pulumi
    import yaml

    from components.config import parse_spec
    from components.planner import plan_for_spec
    from tests.unit.conftest import PLATFORM_STACK_OUTPUTS, RecordingMocks, settle
    from tests.unit.k8s_validate import unwrap_secrets

    cases: list[dict[str, Any]] = []
    for path in sorted((ROOT / "stacks").glob("Pulumi.*.yaml")):
        config = yaml.safe_load(path.read_text())["config"]
        if "llm-endpoints:endpoint" not in config:
            continue
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        spec = parse_spec(config["llm-endpoints:endpoint"])
        label = f"stack {stack} ({spec.serving.value})"
        base = {
            "config": _model_config(spec.model),
            "gpu": _gpu(spec.instance_type or plan_for_spec(spec).instance_type),
        }
        plan = plan_for_spec(spec)
        note = f"plan: {plan.instance_type} TP {plan.tensor_parallel}, vLLM {plan.vllm_version}"
        mocks = RecordingMocks(PLATFORM_STACK_OUTPUTS)
        pulumi.runtime.set_mocks(mocks, project="llm-endpoints", stack=stack, preview=False)
        try:
            from components.endpoint import build_endpoint

            build_endpoint(spec)
            settle()
            found = _emitted(mocks.resources, unwrap_secrets)
        except Exception as e:  # the serving code is someone else's work in progress
            found = _from_scripts(spec, plan)
            failure = f"{type(e).__name__}: {str(e)[:80]}"
            note += f"; build_endpoint failed ({failure}), args from serving.scripts"
        finally:
            pulumi.runtime.settings.reset_options()
        for role, kind, argv, emitted in found:
            name = f"{label} {role}".strip()
            case = {**base, "name": name, "kind": kind, "emitted": emitted}
            case |= {"expect": _expect(plan), "note": note}
            if plan.accelerator.value == "neuron":
                # The Neuron image runs its own vLLM (plan.vllm_version) on NeuronCores:
                # only the arguments are checked here, not a CUDA engine config.
                case["engine"] = False
            if kind == "engine_kwargs":
                case["engine_kwargs"] = argv
            else:
                case["argv"] = _with_model(argv)
            cases.append(case)
    return cases


def planner_cases() -> list[dict[str, Any]]:
    """The planner's choice for every shipped model, as ``Estimate.vllm_args()``."""
    from components import models, planner

    cases: list[dict[str, Any]] = []
    for model in models.MODELS.values():
        try:
            plan = planner.choose(model)
        except planner.PlanError as e:
            cases.append({"name": f"planner {model.id}", "plan_error": str(e)})
            continue
        argv = ["--model", "@MODEL@", "--served-model-name", model.id, *plan.vllm_args()]
        cases.append(
            {
                "name": f"planner {model.id}",
                "kind": "cli",
                "argv": argv,
                "emitted": plan.vllm_args(),
                "config": _model_config(model.id),
                "gpu": _gpu(plan.instance_type),
                "expect": _expect(plan),
                "note": f"{plan.instance_type} TP {plan.tensor_parallel}",
            }
        )
    return cases


# --- Running and reporting ----------------------------------------------------------


def run_checker(python: Path, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Run :data:`CHECKER` in the vLLM environment on the cases."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{stub_libcuda()}:{env.get('LD_LIBRARY_PATH', '')}"
    with tempfile.TemporaryDirectory() as cwd:  # keep vLLM's caches out of the repo
        proc = subprocess.run(
            [str(python), "-c", CHECKER],
            input=json.dumps(cases),
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
        )
    marker = proc.stdout.rfind("@@RESULTS@@")
    if marker < 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit("the checker did not report (see its output above)")
    data: dict[str, Any] = json.loads(proc.stdout[marker + len("@@RESULTS@@") :])
    return data


def _row(case: dict[str, Any], result: dict[str, Any]) -> tuple[str, str, str, str, bool]:
    parsed = "ok" if result.get("parsed") else f"FAIL {result.get('error', '')}"
    engine = result.get("engine") or "-"
    ok = bool(result.get("parsed")) and engine in ("ok", "n/a")
    resolved, expect = result.get("resolved") or {}, case.get("expect") or {}
    batch = "-"
    if resolved:
        batch = (
            f"T {resolved['max_num_batched_tokens']} S {resolved['max_num_seqs']} "
            f"L {resolved['max_model_len']} (planner T {expect.get('max_num_batched_tokens')} "
            f"S {expect.get('max_num_seqs')}), graphs {resolved['capture_sizes']}"
        )
    shown = engine if engine in ("ok", "n/a") else f"FAIL {engine}"
    if engine == "n/a":
        shown = "n/a (the Neuron image's own vLLM; parser only)"
    return case["name"], parsed, shown, batch, ok


def main() -> None:
    from components import planner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm", default=planner.PINNED, help="vLLM version to check against")
    parser.add_argument("--venv", type=Path, default=None, help="virtual environment to use")
    parser.add_argument("--no-install", action="store_true", help="fail instead of installing")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    opts = parser.parse_args()
    venv = opts.venv or CACHE / f"vllm-check-{opts.vllm}"
    python = ensure_venv(opts.vllm, venv, install=not opts.no_install)

    cases = stack_cases() + planner_cases()
    runnable = [c for c in cases if "plan_error" not in c]
    report = run_checker(python, runnable)
    results = iter(report["results"])
    rows, failed = [], 0
    for case in cases:
        if "plan_error" in case:
            rows.append((case["name"], "-", "-", f"no plan: {case['plan_error'][:120]}", False))
            failed += 1
            continue
        row = _row(case, next(results))
        rows.append(row)
        failed += not row[4]
    print(f"vLLM {report['vllm']} (installed in {venv})\n")
    notes = {c["name"]: c.get("note", "") for c in cases}
    width = max(len(r[0]) for r in rows)
    for name, parsed, engine, batch, _ in rows:
        print(f"{name:<{width}}  parse: {parsed:<6}  engine config: {engine}")
        if batch != "-":
            print(f"{'':<{width}}  resolved: {batch}")
        if notes.get(name):
            print(f"{'':<{width}}  note: {notes[name]}")
    print(f"\n{len(rows) - failed} of {len(rows)} argument lists passed")
    if opts.json:
        opts.json.write_text(
            json.dumps(
                {"vllm": report["vllm"], "cases": cases, "results": report["results"]},
                indent=2,
                default=str,
            )
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
