"""The cost planner: exact parameter counts for the two documented bases."""

from __future__ import annotations

from training.cli import main
from training.config import TrainConfig
from training.plan import architecture_of, plan


def test_llama_3_2_1b_r16_on_attention_has_3407872_trainable_parameters(capsys) -> None:
    assert main(["plan", "--config", "training/configs/llama-3.2-1b.yaml"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters: 3,407,872" in out
    assert "1,235,814,400 parameters" in out  # the published size of Llama-3.2-1B
    assert "QLoRA" in out and "GiB" in out


def test_embedded_base_counts_match_the_gguf_file() -> None:
    from service.model.embedded import shipped_gguf

    known, from_file = architecture_of("embedded"), architecture_of(str(shipped_gguf()))
    assert (known.hidden, known.layers, known.heads, known.kv_heads, known.vocab) == (
        from_file.hidden,
        from_file.layers,
        from_file.heads,
        from_file.kv_heads,
        from_file.vocab,
    )
    cost = plan(from_file, TrainConfig())
    assert cost.trainable == 1_843_200  # what peft reports for r=16 on q/k/v/o
    assert from_file.parameters == 134_515_008
    assert round(cost.trainable_pct, 2) == 1.35


def test_more_targets_and_rank_cost_more_and_memory_orders_as_expected() -> None:
    arch = architecture_of("meta-llama/Llama-3.2-1B-Instruct")
    small = plan(arch, TrainConfig())
    big = plan(
        arch,
        TrainConfig.from_dict(
            {
                "lora_r": 32,
                "lora_target_modules": [
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj",
                ],
            }
        ),
    )
    assert big.trainable > 2 * small.trainable
    memory = small.memory_gib
    assert memory["full fine-tune (fp32 AdamW)"] > memory["LoRA, fp32 base (CPU)"]
    assert memory["LoRA, bf16 base (CUDA)"] > memory["QLoRA, 4-bit NF4 base"]


def test_an_unknown_base_is_refused_clearly(capsys) -> None:
    assert main(["plan", "--base", "no/such-model"]) == 2
    assert "not a GGUF file, a transformers folder or one of" in capsys.readouterr().err
