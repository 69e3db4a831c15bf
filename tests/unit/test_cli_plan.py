"""``llm-endpoints plan``: the table, the JSON, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from automation.cli import app, main
from components.catalog import INSTANCES

runner = CliRunner()


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the console-script entry point; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_table_marks_the_cheapest_fitting_instance() -> None:
    result = runner.invoke(app, ["plan", "llama3-8b"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    chosen = [line for line in out.splitlines() if "->" in line]
    assert len(chosen) == 1
    assert "g6.xlarge" in chosen[0] and "0.805" in chosen[0]
    # Sorted by cost: the cheap single-GPU row comes before the 8-GPU ones.
    assert out.index("g6.xlarge") < out.index("g5.48xlarge") < out.index("p5en.48xlarge")
    assert "Chosen: g6.xlarge with TP 1" in out
    assert "vLLM would refuse" not in out
    assert "--max-num-seqs=" in out and "Cold start" in out


def test_neuron_plan() -> None:
    result = runner.invoke(
        app, ["plan", "llama3-8b", "--accelerator", "neuron", "--concurrency", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "Chosen: inf2.8xlarge with TP 2" in result.stdout
    assert "g5.xlarge" not in result.stdout
    # inf2.xlarge is listed but does not fit (16 GiB host memory).
    row = next(line for line in result.stdout.splitlines() if "inf2.xlarge" in line)
    assert " no " in row


def test_json_is_the_only_stdout() -> None:
    result = runner.invoke(app, ["plan", "deepseek-qwen-32b", "--max-model-len", "32768", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    assert data["error"] is None
    choice = data["choice"]
    assert choice["fits"] is True
    assert choice["max_model_len"] == 32768
    assert choice["weights_gib"] < choice["budget_gib"]
    assert INSTANCES[choice["instance_type"]].chip.usable_gib * choice["tensor_parallel"] > 61
    cands = data["candidates"]
    assert cands[0] == choice
    single_a10g = [c for c in cands if c["instance_type"] == "g5.xlarge"]
    assert single_a10g and not single_a10g[0]["fits"]
    assert "weights 61.06 GiB" in single_a10g[0]["reason"]


def test_json_with_instance_and_no_fit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        capsys, "plan", "deepseek-r1-llama-8b", "--instance", "g5.xlarge", "--json"
    )
    assert code == 2
    data = json.loads(out)
    assert data["choice"] is None
    assert data["candidates"][0]["instance_type"] == "g5.xlarge"
    assert err.startswith("error: max_model_len: ")
    assert err.count("\n") == 1
    assert "the largest max_model_len that fits on g5.xlarge (TP 1) is" in err
    assert "g6e.xlarge" in err


def test_instance_with_short_context_fits(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        capsys,
        "plan",
        "deepseek-r1-llama-8b",
        "--instance",
        "g5.xlarge",
        "--max-model-len",
        "8192",
        "--storage",
        "s3",
    )
    assert code == 0, err
    assert err == ""
    assert "Chosen: g5.xlarge with TP 1" in out
    assert "weights load" in out and "weights download" not in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "llama-9000"], "error: model: unknown model 'llama-9000' (closest: "),
        (
            ["plan", "llama3-8b", "--max-model-len", "-5"],
            "error: max_model_len: must be between 1 and 8192",
        ),
        (
            ["plan", "llama3-8b", "--max-model-len", "1000000"],
            "error: max_model_len: must be between 1 and 8192",
        ),
        (
            ["plan", "llama3-8b", "--gpu-memory-utilization", "1.5"],
            "error: gpu_memory_utilization: must be in (0, 1], got 1.5",
        ),
        (
            ["plan", "llama3-8b", "--gpu-memory-utilization", "0"],
            "error: gpu_memory_utilization: must be in (0, 1], got 0",
        ),
        (
            ["plan", "llama3-8b", "--instance", "g5.xlargee"],
            "error: instance_type: unknown instance type 'g5.xlargee' (closest: g5.xlarge",
        ),
        (
            ["plan", "llama3-8b", "--accelerator", "tpu"],
            "error: accelerator: 'tpu' is not one of nvidia, neuron",
        ),
        (
            ["plan", "llama3-8b", "--instance", "g5.xlarge", "--accelerator", "neuron"],
            "error: accelerator: g5.xlarge has nvidia accelerators",
        ),
        (["plan", "llama3-8b", "--concurrency", "0"], "error: concurrency: must be >= 1"),
        (["plan", "llama3-8b", "--storage", "nfs"], "error: storage: unknown storage kind 'nfs'"),
        (
            ["plan", "llama3-8b", "--instance", "g5.12xlarge", "--tensor-parallel", "3"],
            "error: tensor_parallel: 3 is not valid",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, out, err = run_main(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.startswith(expected), err
    assert err.count("\n") == 1


def test_help_lists_plan() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "plan" in result.stdout


# --- Any model, the vLLM batch flags, optimize -------------------------------------

CONFIGS = Path(__file__).resolve().parents[2] / "components" / "models" / "configs"
MUST_SHOW = {
    "weights_gib",
    "kv_cache_gib",
    "kv_tokens",
    "max_concurrency",
    "decode_tokens_per_s",
    "aggregate_tokens_per_s",
    "cost_per_million_tokens",
    "fits",
}


def test_model_config_with_every_flag_as_json() -> None:
    """The issue's example: any config.json, a fixed configuration, the numbers as JSON."""
    result = runner.invoke(
        app,
        [
            "plan",
            "--model-config", str(CONFIGS / "Qwen__Qwen3-32B.json"),
            "--instance", "g6e.12xlarge",
            "--tensor-parallel", "4",
            "--max-model-len", "32768",
            "--gpu-memory-utilization", "0.9",
            "--max-num-seqs", "64",
            "--max-num-batched-tokens", "4096",
            "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "Qwen/Qwen3-32B"  # from the file name
    assert data["vllm_version"] == "0.33.0"
    est = data["candidates"][0]
    assert set(est) >= MUST_SHOW
    assert est == data["choice"] and est["fits"] is True
    assert (est["max_num_seqs"], est["max_num_batched_tokens"]) == (64, 4096)
    assert est["kv_tokens"] > 32768 and est["kv_cache_gib"] > 0
    assert est["cost_per_million_tokens"] == pytest.approx(
        est["cost_per_hour"] / (est["aggregate_tokens_per_s"] * 3600) * 1e6, rel=1e-3
    )


def test_model_config_with_an_id_and_the_ray_images_vllm(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text((CONFIGS / "openai__gpt-oss-20b.json").read_text())
    result = runner.invoke(
        app,
        ["plan", "acme/gpt-oss-20b-ft", "--model-config", str(config), "--max-model-len",
         "20000", "--vllm-version", "0.29.0", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "acme/gpt-oss-20b-ft"
    assert data["choice"]["vllm_version"] == "0.29.0"


def test_optimize_cost_per_token_picks_the_a10g_for_8b() -> None:
    result = runner.invoke(app, ["plan", "llama3-8b", "--optimize", "cost-per-token"])
    assert result.exit_code == 0, result.output
    assert "Chosen: g5.xlarge with TP 1, the cheapest per token" in result.stdout
    assert "$/1M tokens" in result.stdout  # the table says how it is ordered


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["plan", "--model-config", "/nonexistent/config.json"],
            "error: model_config: cannot read",
        ),
        (["plan"], "error: model: give MODEL"),
        (["plan", "llama3-8b", "--optimize", "fast"], "error: optimize: 'fast' is not one of"),
        (["plan", "llama3-8b", "--max-num-seqs", "0"], "error: max_num_seqs: must be >= 1"),
        (
            ["plan", "llama3-8b", "--max-num-batched-tokens", "0"],
            "error: max_num_batched_tokens: must be >= 1",
        ),
        (["plan", "llama3-8b", "--vllm-version", "0.1"], "error: vllm_version: no profile"),
    ],
)
def test_bad_plan_flags_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith(expected), err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "error: model_config: "),
        (
            '{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096}',
            "num_hidden_layers is missing",
        ),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_bad_model_config_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    code, out, err = run_main(capsys, "plan", "acme/x", "--model-config", str(path))
    assert code == 2 and out == ""
    assert err.startswith("error: model_config: ") and expected in err, err
