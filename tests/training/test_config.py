"""The axolotl-style training config: the shipped files load, bad values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.mark.parametrize(
    ("name", "targets"),
    [
        ("axolotl-config.yaml", [*ATTENTION, "gate_proj", "up_proj", "down_proj"]),
        ("llama-3.2-1b.yaml", ATTENTION),
    ],
)
def test_shipped_configs_load_without_warnings(name: str, targets: list[str], recwarn) -> None:
    config = TrainConfig.load(CONFIGS / name)
    assert config.lora_r == 16 and config.lora_target_modules == targets
    assert not [w for w in recwarn if "unknown key" in str(w.message)]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"lora_r": 0}, "lora_r"),
        ({"lora_r": "16"}, "lora_r"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"adapter": "dora"}, "adapter"),
        ({"adapter": "qlora"}, "adapter"),
        ({"load_in_8bit": True, "load_in_4bit": True}, "load_in_4bit"),
        ({"lora_target_modules": ["q_proj", "lm_head"]}, "lora_target_modules"),
        ({"learning_rate": 3}, "learning_rate"),
        ({"val_set_size": 1.5}, "val_set_size"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"sequence_len": 16}, "sequence_len"),
        ({"train_on_inputs": "yes"}, "train_on_inputs"),
        ({"group_by_length": 1}, "group_by_length"),
        ({"datasets": [{"path": "x.jsonl", "type": "alpaca"}]}, "datasets[0].type"),
        ({"datasets": "x.jsonl"}, "datasets"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig.from_dict(raw)


def test_unknown_keys_are_warned_and_ignored() -> None:
    with pytest.warns(UserWarning, match="unknown key 'flash_attention'"):
        config = TrainConfig.from_dict({"flash_attention": True, "lora_r": 8})
    assert config.lora_r == 8


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        TrainConfig.load(path)
    path.write_text("lora_r: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.load(path)


def test_rslora_changes_the_scale() -> None:
    assert TrainConfig.from_dict({"lora_r": 16, "lora_alpha": 32}).scale == 2.0
    assert (
        TrainConfig.from_dict({"lora_r": 16, "lora_alpha": 32, "peft_use_rslora": True}).scale
        == 8.0
    )
