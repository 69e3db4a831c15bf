"""Catalog facts and lookups."""

from __future__ import annotations

import pytest

from components.catalog import (
    BYTES_PER_ELEMENT,
    GIB,
    INSTANCES,
    MODELS,
    Accelerator,
    DType,
    closest,
    get_instance,
    get_model,
)


def test_lookup_by_id_alias_case_and_whitespace() -> None:
    llama = MODELS["NousResearch/Meta-Llama-3-8B-Instruct"]
    assert get_model("NousResearch/Meta-Llama-3-8B-Instruct") is llama
    assert get_model("llama3-8b") is llama
    assert get_model("meta-llama/meta-llama-3-8b-instruct") is llama
    assert get_model("  LLAMA3-8B ") is llama
    assert get_model("gpt-oss-20b").id == "openai/gpt-oss-20b"


def test_unknown_model_names_the_closest() -> None:
    with pytest.raises(
        ValueError, match=r"^model: unknown model 'gpt-oss-21b' \(closest: gpt-oss-20b"
    ):
        get_model("gpt-oss-21b")
    # Nothing close: list the valid names.
    with pytest.raises(ValueError, match=r"\(valid: .*llama3-8b"):
        get_model("zzzzzzzzzzzzzz")


def test_instance_lookup() -> None:
    assert get_instance(" G5.XLARGE ") is INSTANCES["g5.xlarge"]
    with pytest.raises(ValueError, match=r"^instance_type: unknown instance type 'p5.48xl'"):
        get_instance("p5.48xl")
    assert closest("g6e.xlarg", list(INSTANCES)).startswith("closest: g6e.xlarge")


def test_weight_sizes() -> None:
    # Llama-3-8B in bf16: 8.03e9 x 2 bytes = 14.96 GiB (DESIGN.md, vLLM logs).
    assert MODELS["NousResearch/Meta-Llama-3-8B-Instruct"].weight_bytes / GIB == pytest.approx(
        14.96, abs=0.01
    )
    qwen = MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"]
    assert qwen.weight_bytes / GIB == pytest.approx(qwen.checkpoint_gib, rel=0.01)
    # gpt-oss: MXFP4 experts (4.25 bits) plus bf16 rest is ~12.8 GiB, like its checkpoint.
    oss = MODELS["openai/gpt-oss-20b"]
    assert oss.weight_bytes / GIB == pytest.approx(oss.checkpoint_gib, rel=0.01)
    assert BYTES_PER_ELEMENT[DType.MXFP4] == pytest.approx(0.53125)


def test_moe_active_parameters() -> None:
    oss = MODELS["openai/gpt-oss-20b"]
    assert oss.moe is not None
    # Non-expert 1.79e9 + 4 of 32 experts of 19.12e9 (the card's 3.6e9 leaves out
    # the embedding tables); counted from the config, so to 0.5 %.
    assert oss.expert_params == pytest.approx(19.12e9, rel=5e-3)
    assert oss.params - oss.expert_params == pytest.approx(1.79e9, rel=5e-3)
    assert oss.active_params == pytest.approx(
        oss.params - oss.expert_params + oss.expert_params * 4 / 32
    )
    dense = MODELS["deepseek-ai/DeepSeek-R1-Distill-Llama-8B"]
    assert dense.active_params == dense.params


def test_model_architecture_facts() -> None:
    for m in MODELS.values():
        assert m.heads % m.kv_heads == 0, m.id
        assert m.max_context >= 8192, m.id
        assert m.source
    assert MODELS["openai/gpt-oss-20b"].sliding_window_layers == 12


@pytest.mark.parametrize(
    ("name", "count", "price"),
    [
        ("g5.xlarge", 1, 1.006),
        ("g5.48xlarge", 8, 16.288),
        ("g6.xlarge", 1, 0.805),
        ("g6e.12xlarge", 4, 10.493),
        ("p4d.24xlarge", 8, 21.958),
        ("p5en.48xlarge", 8, 63.296),
        ("inf2.8xlarge", 1, 1.968),
        ("inf2.48xlarge", 12, 12.981),
    ],
)
def test_instance_facts_match_the_design_table(name: str, count: int, price: float) -> None:
    inst = INSTANCES[name]
    assert inst.count == count
    assert inst.price_per_hour == pytest.approx(price)


def test_instance_derived_properties() -> None:
    g6e = INSTANCES["g6e.xlarge"]
    assert (g6e.family, g6e.generation, g6e.category) == ("g6e", 6, "g")
    p4de = INSTANCES["p4de.24xlarge"]
    assert (p4de.family, p4de.generation, p4de.category) == ("p4de", 4, "p")
    inf2 = INSTANCES["inf2.xlarge"]
    assert (inf2.family, inf2.generation, inf2.category) == ("inf2", 2, "inf")


def test_chips() -> None:
    for inst in INSTANCES.values():
        assert inst.chip.usable_gib <= inst.chip.memory_gib + 1e-9, inst.name
        assert (inst.accelerator is Accelerator.NEURON) == (inst.chip.cores == 2), inst.name
    assert INSTANCES["g5.xlarge"].chip.usable_gib == 22.30  # vLLM's log on g5
    assert INSTANCES["p4d.24xlarge"].efa > 0 and INSTANCES["g5.xlarge"].efa == 0
