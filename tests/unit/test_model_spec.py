"""The spec's model (shipped, or any Hugging Face id with its model_config), its
vllm.max_num_batched_tokens, and what the pinned serving images can serve."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from components import _versions, model_spec
from components.catalog import MODELS, get_instance
from components.config import parse_spec
from components.image_rules import check_serving, serving_image
from components.model_spec import MinVllm, family_refusal, version_tuple, vllm_refusal
from components.models import get_model, read_config
from components.planner import model_for_spec, plan_for_spec
from components.rules import MODEL_CONFIG_MAX_BYTES, MODEL_CONFIG_MAX_DEPTH, check_model_config
from tests.unit.conftest import custom_model

QWEN3_8B = read_config("Qwen__Qwen3-8B.json")
FINETUNE = "acme/qwen3-8b-finetune"


def spec(**fields: Any) -> dict[str, Any]:
    return {"name": "ep", "model": "llama3-8b"} | fields


def refused(data: dict[str, Any], field: str) -> str:
    with pytest.raises(ValueError) as err:
        parse_spec(data)
    msg = str(err.value)
    assert msg.startswith(f"{field}: "), msg
    return msg


# --- model and model_config ---------------------------------------------------------


def test_any_hugging_face_id_with_its_config_is_planned_from_it() -> None:
    s = parse_spec(spec(model=FINETUNE, model_config=QWEN3_8B, instance_type="g6e.xlarge"))
    assert s.hf_config == QWEN3_8B
    arch = model_for_spec(s)
    assert (arch.id, arch.architecture, arch.layers) == (FINETUNE, "Qwen3ForCausalLM", 36)
    e = plan_for_spec(s)
    assert e.model_id == FINETUNE and e.fits


def test_the_config_is_recorded_under_its_alias_and_reads_back() -> None:
    s = parse_spec(spec(model=FINETUNE, model_config=QWEN3_8B))
    data = s.model_dump(mode="json")
    assert data["model_config"] == QWEN3_8B and "hf_config" not in data
    assert parse_spec(data) == s
    # The attribute name is no key of the spec.
    refused(spec(model=FINETUNE, hf_config=QWEN3_8B), "hf_config")


def test_a_shipped_id_with_a_config_is_sized_from_that_config() -> None:
    small = read_config("Qwen__Qwen3-0.6B.json")
    s = parse_spec(spec(model="Qwen/Qwen3-8B", model_config=small))
    assert model_for_spec(s).layers == small["num_hidden_layers"] != get_model("qwen3-8b").layers


def test_an_unknown_id_without_a_config_says_to_pass_model_config() -> None:
    msg = refused(spec(model="Qwen/Qwen3-9B"), "model")
    assert "model_config" in msg and "closest: Qwen/Qwen3-8B" in msg
    msg = refused(spec(model="acme/unheard-of"), "model")
    assert "model_config" in msg and "valid:" not in msg  # no wall of names


def test_an_alias_cannot_take_a_config() -> None:
    msg = refused(spec(model="llama3-8b", model_config=QWEN3_8B), "model")
    assert "owner/name" in msg


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ([QWEN3_8B], "must be a JSON object"),
        ("{}", "must be a JSON object"),
        ({"blob": "x" * MODEL_CONFIG_MAX_BYTES}, f"more than the {MODEL_CONFIG_MAX_BYTES}"),
        ({"a": [0] * 20_001}, "more than 20000 values"),
        ({1: 2}, "keys must be strings"),
        ({"x": math.nan}, "NaN or Infinity"),
        ({"released": date(2025, 1, 1)}, "date, which is not JSON"),
        ({**QWEN3_8B, "num_hidden_layers": None}, "num_hidden_layers is missing"),
        ({"foo": 1}, "architectures and model_type are both missing"),
    ],
)
def test_bad_configs_are_refused_naming_model_config(config: Any, expected: str) -> None:
    msg = refused(spec(model=FINETUNE, model_config=config), "model_config")
    assert expected in msg, msg


def test_deep_configs_are_refused_without_recursing() -> None:
    deep: Any = 1
    for _ in range(100_000):  # past any recursion limit
        deep = [deep]
    with pytest.raises(ValueError, match=f"deeper than {MODEL_CONFIG_MAX_DEPTH}"):
        check_model_config({"x": deep})
    ok: Any = {"leaf": 1}
    for _ in range(MODEL_CONFIG_MAX_DEPTH - 1):
        ok = {"k": ok}
    assert check_model_config(ok) == ok


def test_every_shipped_config_is_within_the_bounds() -> None:
    from components.models import ENTRIES

    for entry in ENTRIES:
        check_model_config(read_config(entry.file))


def test_custom_model_still_works_but_not_with_model_config() -> None:
    cm = custom_model(params=7e9, vocab_size=32000)
    assert model_for_spec(parse_spec(spec(model="acme/other", custom_model=cm))).layers == 32
    msg = refused(spec(model="acme/other", custom_model=cm, model_config=QWEN3_8B), "model_config")
    assert "not both" in msg


# --- vllm.max_num_batched_tokens -------------------------------------------------------


@pytest.mark.parametrize("tokens", [0, 15, 131_073, "many"])
def test_max_num_batched_tokens_is_bounded(tokens: Any) -> None:
    refused(spec(vllm={"max_num_batched_tokens": tokens}), "vllm.max_num_batched_tokens")


def test_max_num_batched_tokens_reaches_the_planner_and_vllm() -> None:
    s = parse_spec(spec(instance_type="g6e.xlarge", vllm={"max_num_batched_tokens": 4096}))
    # The serving code passes extra_args to vLLM in every mode; the flag rides there.
    assert s.vllm.extra_args == ["--max-num-batched-tokens=4096"]
    e = plan_for_spec(s)
    assert e.max_num_batched_tokens == 4096 and e.batched_tokens_set
    assert "--max-num-batched-tokens=4096" in e.vllm_args()
    assert parse_spec(s.model_dump(mode="json")) == s  # stable when read back


def test_the_flag_in_extra_args_fills_the_field() -> None:
    s = parse_spec(spec(vllm={"extra_args": ["--max-num-batched-tokens", "8192"]}))
    assert s.vllm.max_num_batched_tokens == 8192
    assert s.vllm.extra_args == ["--max-num-batched-tokens=8192"]
    same = spec(
        vllm={"max_num_batched_tokens": 8192, "extra_args": ["--max-num-batched-tokens=8192"]}
    )
    assert parse_spec(same).vllm == s.vllm


def test_max_num_batched_tokens_conflicts_are_refused() -> None:
    msg = refused(
        spec(
            vllm={"max_num_batched_tokens": 4096, "extra_args": ["--max-num-batched-tokens=8192"]}
        ),
        "vllm.max_num_batched_tokens",
    )
    assert "set it once" in msg
    msg = refused(
        spec(vllm={"max_num_batched_tokens": 64, "max_num_seqs": 128}),
        "vllm.max_num_batched_tokens",
    )
    assert "max_num_seqs 128" in msg
    refused(
        spec(vllm={"max_num_batched_tokens": 64, "extra_args": ["--enforce-eager"] * 32}),
        "vllm.extra_args",
    )


# --- what the pinned images serve ----------------------------------------------------------


def test_version_tuples() -> None:
    assert version_tuple("0.10.1") == (0, 10, 1)
    assert version_tuple("0.10.1+gptoss") == (0, 10, 1)
    assert version_tuple("0.8.5.post1") == (0, 8, 5)
    assert version_tuple("0.9.0rc2") == (0, 9, 0)
    assert version_tuple("0.10.1") > version_tuple("0.9.9")


def test_the_table_names_its_sources() -> None:
    assert all(row.source and version_tuple(row.version) for row in model_spec.MIN_VLLM)
    gpt_oss = get_model("gpt-oss-20b")
    need = vllm_refusal(gpt_oss, "0.10.0")
    assert need is not None and need.version == "0.10.1"
    assert vllm_refusal(gpt_oss, "0.10.1") is None


@pytest.mark.parametrize("serving", ["deployment", "ray-service"])
def test_every_shipped_model_is_served_by_the_pinned_images(serving: str) -> None:
    for model_id in MODELS:
        check_serving(parse_spec(spec(model=model_id, serving=serving)))
    check_serving(parse_spec(spec(accelerator="neuron", instance_type="inf2.xlarge")))


def _set_vllm(monkeypatch: pytest.MonkeyPatch, image: str, version: str) -> None:
    monkeypatch.setitem(_versions.IMAGES, image, replace(_versions.IMAGES[image], vllm=version))


def test_ray_service_for_a_model_the_ray_images_vllm_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _set_vllm(monkeypatch, _versions.RAY_VLLM_IMAGE, "0.10.0")
    ray = parse_spec(spec(model="openai/gpt-oss-20b", serving="ray-service"))
    with pytest.raises(ValueError) as err:
        check_serving(ray)
    msg = str(err.value)
    assert msg.startswith("serving: openai/gpt-oss-20b (GptOssForCausalLM) needs vLLM >= 0.10.1")
    assert "0.10.0" in msg and "serving 'deployment'" in msg and _versions.VLLM_IMAGE in msg
    check_serving(parse_spec(spec(model="openai/gpt-oss-20b")))  # the deployment image can
    check_serving(parse_spec(spec(model="llama3-8b", serving="ray-service")))


def test_a_model_no_pinned_image_can_run_names_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for image in (_versions.VLLM_IMAGE, _versions.RAY_VLLM_IMAGE):
        _set_vllm(monkeypatch, image, "0.8.0")
    for serving in ("deployment", "ray-service"):
        with pytest.raises(ValueError, match=r"^model: Qwen/Qwen3-8B \(Qwen3ForCausalLM\)"):
            check_serving(parse_spec(spec(model="qwen3-8b", serving=serving)))
    # A fine-tune is judged by its config's architecture.
    with pytest.raises(ValueError, match=rf"^model: {FINETUNE} \(Qwen3ForCausalLM\)"):
        check_serving(parse_spec(spec(model=FINETUNE, model_config=QWEN3_8B)))
    check_serving(parse_spec(spec(model="qwen2.5-7b")))


def test_quantization_rows_apply_to_checkpoints_quantized_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = MinVllm("quantization", "fp8", "99.0", "a test")
    monkeypatch.setattr(model_spec, "MIN_VLLM", (row,))
    with pytest.raises(ValueError, match=r"^model: Qwen/Qwen3-32B-FP8 \(fp8 weights\) needs"):
        check_serving(parse_spec(spec(model="Qwen/Qwen3-32B-FP8")))
    check_serving(parse_spec(spec(model="Qwen/Qwen3-32B")))


def test_an_image_serves_only_the_families_it_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    neuron = _versions.VLLM_NEURON_IMAGE
    monkeypatch.setitem(
        _versions.IMAGES, neuron, replace(_versions.IMAGES[neuron], families=("trn1",))
    )
    inf2 = parse_spec(spec(instance_type="inf2.xlarge"))
    assert serving_image(inf2) == neuron
    with pytest.raises(ValueError) as err:
        check_serving(inf2)
    assert str(err.value) == (
        f"instance_type: inf2.xlarge is of the inf2 family; the serving image {neuron} "
        "runs only on trn1 instances"
    )
    # The planner's choice is checked the same way when the spec names no instance.
    chosen = parse_spec(spec(accelerator="neuron"))
    check_serving(chosen)
    with pytest.raises(ValueError, match=r"^instance_type: inf2.8xlarge is of the inf2 family"):
        check_serving(chosen, "inf2.8xlarge")


def test_the_pools_extra_instance_types_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    image = _versions.VLLM_IMAGE
    monkeypatch.setitem(_versions.IMAGES, image, replace(_versions.IMAGES[image], families=("g5",)))
    shared = {"mode": "shared", "platform_stack": "org/p/platform"}
    s = parse_spec(
        spec(instance_type="g5.xlarge", cluster=shared, pool={"instance_types": ["g6.xlarge"]})
    )
    with pytest.raises(ValueError, match=r"^pool.instance_types: g6.xlarge is of the g6 family"):
        check_serving(s)


def test_nvidia_images_and_neuron_images_stay_on_their_chips() -> None:
    nvidia, neuron = _versions.VLLM_IMAGE, _versions.VLLM_NEURON_IMAGE
    msg = family_refusal(nvidia, _versions.IMAGES[nvidia], get_instance("inf2.xlarge"))
    assert msg == (
        f"inf2.xlarge has neuron accelerators; the serving image {nvidia} runs only on "
        "NVIDIA instances"
    )
    msg = family_refusal(neuron, _versions.IMAGES[neuron], get_instance("g5.xlarge"))
    assert msg is not None and re.search(r"runs only on inf2, trn1 instances$", msg)
    assert family_refusal(nvidia, _versions.IMAGES[nvidia], get_instance("p5.48xlarge")) is None
