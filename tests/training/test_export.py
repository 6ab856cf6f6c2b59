"""PEFT LoRA -> GGUF adapter -> merged GGUF, checked against transformers' own merge on
the real embedded model. Logits are compared by max abs diff on F32: top-1 agreement alone
passes even a wrongly permuted merge (NOTES-model-pipeline.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch
from llama_cpp import Llama
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.model.embedded import shipped_gguf
from service.model.gguf_files import base_identity, merge_lora, quantize_gguf
from service.prompt import SYSTEM_PROMPT
from tests.service.test_gguf_files import write_tiny_gguf
from training.base import hf_folder, hf_identity
from training.export import peft_to_gguf_adapter, write_modelfile

pytestmark = pytest.mark.slow

PROMPT = (
    "<|im_start|>user\nWhy is the checkout service slow since the last deploy?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class Lora:
    folder: Path
    ids: list[int]
    base_logits: np.ndarray
    merged_logits: np.ndarray
    """transformers' logits for ``ids``: the base, and the base with the LoRA merged."""


def logits(model: torch.nn.Module, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.fixture(scope="module")
def lora(hf_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Lora:
    """A peft LoRA on q/k/v/o whose lora_B is seeded noise (peft starts it at zero, a no-op)
    large enough to change the output visibly, and transformers' merge of it."""
    torch.manual_seed(0)
    ids = AutoTokenizer.from_pretrained(hf_base)(PROMPT).input_ids
    model = AutoModelForCausalLM.from_pretrained(hf_base, dtype=torch.float32)
    base_logits = logits(model, ids)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS)
    )
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=noise) * 0.02)
    folder = tmp_path_factory.mktemp("peft") / "lora"
    peft_model.save_pretrained(folder)
    fresh = AutoModelForCausalLM.from_pretrained(hf_base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(fresh, folder).merge_and_unload()
    return Lora(folder, ids, base_logits, logits(merged, ids))


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def adapter_gguf(lora: Lora, gguf_dir: Path) -> Path:
    """F32 tensors, for the precision checks: with F16 ones llama.cpp also rounds the
    activations that meet them to F16 at run time."""
    return peft_to_gguf_adapter(lora.folder, shipped_gguf(), gguf_dir / "lora.F32.gguf", "F32")


@pytest.fixture(scope="module")
def merged_f32(adapter_gguf: Path, gguf_dir: Path) -> Path:
    return merge_lora(shipped_gguf(), adapter_gguf, gguf_dir / "merged.F32.gguf", "F32")


@pytest.fixture(scope="module")
def q8_0(lora: Lora, gguf_dir: Path) -> Path:
    """The shipping path: F16 adapter, merged as F16, quantised to Q8_0."""
    adapter = peft_to_gguf_adapter(lora.folder, shipped_gguf(), gguf_dir / "lora.F16.gguf")
    merged = merge_lora(shipped_gguf(), adapter, gguf_dir / "merged.F16.gguf", "F16")
    return quantize_gguf(merged, gguf_dir / "merged.Q8_0.gguf", "Q8_0")


def llama_run(ids: list[int], greedy: int = 0, **model: str) -> tuple[np.ndarray, list[int]]:
    """llama.cpp's logits for every position of ``ids``, and the next ``greedy`` tokens.
    The KV cache is F32: its default F16 adds ~0.02 of noise that would hide small errors."""
    llm = Llama(
        n_ctx=256,
        n_threads=2,
        logits_all=True,
        verbose=False,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        **model,  # type: ignore[arg-type]
    )
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)])
    tokens: list[int] = []
    for _ in range(greedy):
        tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(tokens[-1:])
    return scores, tokens


@pytest.fixture(scope="module")
def merged_run(lora: Lora, merged_f32: Path) -> tuple[np.ndarray, list[int]]:
    return llama_run(lora.ids, greedy=16, model_path=str(merged_f32))


def test_the_hf_folder_names_the_same_base_as_its_gguf(hf_base: Path) -> None:
    assert hf_identity(hf_base) == base_identity(shipped_gguf())
    assert "quantization_config" not in json.loads((hf_base / "config.json").read_text())
    written = (hf_base / "model.safetensors").stat().st_mtime_ns
    assert hf_folder(shipped_gguf(), hf_base.parent) == hf_base
    assert (hf_base / "model.safetensors").stat().st_mtime_ns == written  # cached, not redone


def test_the_merged_gguf_matches_the_transformers_merge(
    lora: Lora, merged_run: tuple[np.ndarray, list[int]]
) -> None:
    ours, _ = merged_run
    drift = float(np.abs(ours - lora.merged_logits).max())
    effect = float(np.abs(lora.merged_logits - lora.base_logits).max())
    print(f"\nmerged F32 GGUF vs transformers merge: {drift:.2e}; the LoRA's effect: {effect:.2f}")
    assert drift <= 0.01
    assert effect >= 100 * 0.01  # a merge that dropped or misplaced the LoRA would fail above


def test_the_base_with_the_adapter_at_run_time_equals_the_merge(
    lora: Lora, adapter_gguf: Path, merged_run: tuple[np.ndarray, list[int]], gguf_dir: Path
) -> None:
    base_f32 = merge_lora(shipped_gguf(), None, gguf_dir / "base.F32.gguf", "F32")
    merged, merged_tokens = merged_run
    swapped, swapped_tokens = llama_run(
        lora.ids, greedy=16, model_path=str(base_f32), lora_path=str(adapter_gguf)
    )
    bare, _ = llama_run(lora.ids, model_path=str(base_f32))
    drift = float(np.abs(swapped - merged).max())
    print(f"\nbase F32 + GGUF adapter vs merged F32: {drift:.2e}")
    assert drift <= 0.002
    assert swapped_tokens == merged_tokens
    assert float(np.abs(bare - merged).max()) > 100 * 0.002  # the adapter was really applied


def test_the_merged_f16_quantises_to_a_q8_0_of_the_same_base(q8_0: Path) -> None:
    assert base_identity(q8_0) == base_identity(shipped_gguf())
    llm = Llama(model_path=str(q8_0), n_ctx=256, n_threads=2, verbose=False)
    answer = llm.create_completion(PROMPT, max_tokens=8, temperature=0.0)
    assert answer["choices"][0]["text"].strip()  # type: ignore[index]


def test_export_refuses_a_module_it_cannot_map(hf_base: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(hf_base, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "lm_head"])).save_pretrained(
        tmp_path / "lora"
    )
    with pytest.raises(ValueError, match="lm_head"):
        peft_to_gguf_adapter(tmp_path / "lora", shipped_gguf(), tmp_path / "lora.gguf")
    assert not list(tmp_path.glob("lora.gguf*"))


def test_the_modelfile_serves_the_gguf_as_the_service_prompts_it(q8_0: Path) -> None:
    modelfile = write_modelfile(q8_0, SYSTEM_PROMPT)
    assert modelfile == q8_0.with_name("merged.Q8_0.Modelfile")
    text = modelfile.read_text()
    assert text.startswith("FROM ./merged.Q8_0.gguf\n")
    assert 'TEMPLATE """' in text and "<|im_start|>{{ .Role }}" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0" in text
    assert f'SYSTEM """{SYSTEM_PROMPT}"""' in text


def test_the_modelfile_template_follows_the_gguf_chat_template(tmp_path: Path) -> None:
    llama3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}"
    path = write_tiny_gguf(tmp_path / "llama3.gguf", ["a"], template=llama3)
    text = write_modelfile(path, "Be brief.").read_text()
    assert "<|start_header_id|>{{ .Role }}<|end_header_id|>" in text
    assert 'PARAMETER stop "<|eot_id|>"' in text and 'SYSTEM """Be brief."""' in text
    with pytest.raises(ValueError, match="neither ChatML"):
        write_modelfile(write_tiny_gguf(tmp_path / "other.gguf", ["a"]), "Be brief.")
