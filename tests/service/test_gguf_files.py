"""Base identity, requantising, merging and adapter manifests, on the real embedded GGUF."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from llama_cpp import Llama

from service.model.embedded import prepare_embedded, shipped_gguf
from service.model.gguf_files import (
    AdapterMismatch,
    BaseIdentity,
    InvalidManifest,
    base_identity,
    check_manifest,
    loaded_identity,
    merge_lora,
    quantize_gguf,
    read_manifest,
    write_manifest,
)
from tests.service.serving import serving
from tests.service.test_adapters import manifest_for, write_adapter
from tests.service.test_api import FULL_REPORT


def write_tiny_gguf(
    path: Path, tokens: list[str], hidden: int = 8, template: str = "{{ messages }}"
) -> Path:
    """A one-block Llama-shaped GGUF with its own vocabulary: another base."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(1)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(2 * hidden)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), hidden), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def shipped_identity() -> BaseIdentity:
    return base_identity(shipped_gguf())


@pytest.mark.slow
def test_identity_is_the_same_across_quantisations_and_differs_for_another_base(
    tmp_path: Path, shipped_identity: BaseIdentity
) -> None:
    started = time.perf_counter()
    q8 = quantize_gguf(shipped_gguf(), tmp_path / "q8.gguf", "Q8_0")
    print(f"\nrequantise Q4_1 -> Q8_0: {time.perf_counter() - started:.2f} s")
    assert gguf.GGUFReader(str(q8)).get_field("general.file_type").contents() == 7
    assert base_identity(q8) == shipped_identity
    assert shipped_identity.architecture == "llama"
    assert shipped_identity.name.startswith("Smollm2 135M")
    # what the service computes from the loaded model is the same as from the file
    assert loaded_identity(Llama(str(q8), n_ctx=64, verbose=False), q8) == shipped_identity

    tiny = base_identity(write_tiny_gguf(tmp_path / "tiny.gguf", ["a", "b", "c"]))
    retokenised = base_identity(write_tiny_gguf(tmp_path / "tiny2.gguf", ["a", "b", "d"]))
    assert tiny.fingerprint != shipped_identity.fingerprint
    assert tiny.fingerprint != retokenised.fingerprint  # same shapes, another vocabulary
    assert tiny.chat_template_sha256 != shipped_identity.chat_template_sha256


def test_quantize_names_an_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Q9_X"):
        quantize_gguf(shipped_gguf(), tmp_path / "out.gguf", "Q9_X")
    assert list(tmp_path.iterdir()) == []


def write_lora(path: Path, arch: str, tensors: dict[str, np.ndarray]) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.slow
def test_merge_refuses_an_adapter_for_another_architecture_or_shape(tmp_path: Path) -> None:
    a, b = np.zeros((8, 576), np.float32), np.zeros((576, 8), np.float32)
    pair = {"blk.0.attn_q.weight.lora_a": a, "blk.0.attn_q.weight.lora_b": b}
    out = tmp_path / "merged.gguf"
    with pytest.raises(ValueError, match="'qwen2'"):
        merge_lora(shipped_gguf(), write_lora(tmp_path / "qwen.gguf", "qwen2", pair), out)
    wrong = {"blk.0.attn_k.weight.lora_a": a, "blk.0.attn_k.weight.lora_b": b}  # k is 192 rows
    with pytest.raises(ValueError, match=r"blk\.0\.attn_k\.weight"):
        merge_lora(shipped_gguf(), write_lora(tmp_path / "shape.gguf", "llama", wrong), out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_manifest_round_trip_and_clear_errors(
    tmp_path: Path, shipped_identity: BaseIdentity
) -> None:
    path = write_manifest(manifest_for(shipped_identity), tmp_path / "team-a.json")
    manifest = read_manifest(path)
    assert manifest.format == "whyslow-adapter/1" and manifest.base == shipped_identity
    check_manifest(manifest, shipped_identity)

    other = shipped_identity.model_copy(update={"name": "Other 1B", "fingerprint": "f" * 64})
    with pytest.raises(AdapterMismatch) as refused:
        check_manifest(manifest_for(other), shipped_identity)
    assert "'Other 1B'" in str(refused.value) and shipped_identity.name in str(refused.value)

    (tmp_path / "broken.json").write_text('{"name": "broken", ')
    with pytest.raises(InvalidManifest, match=r"broken\.json is not valid JSON"):
        read_manifest(tmp_path / "broken.json")
    raw = json.loads(path.read_text())
    del raw["base"]
    (tmp_path / "no-base.json").write_text(json.dumps(raw | {"format": "whyslow-adapter/0"}))
    with pytest.raises(InvalidManifest) as invalid:
        read_manifest(tmp_path / "no-base.json")
    assert "base: Field required" in str(invalid.value) and "format" in str(invalid.value)
    with pytest.raises(InvalidManifest, match="cannot read"):
        read_manifest(tmp_path / "missing.json")
    raw = json.loads(path.read_text())
    (tmp_path / "bias.json").write_text(json.dumps(raw | {"cause_bias": {"latency": 1.0}}))
    with pytest.raises(InvalidManifest) as unknown:
        read_manifest(tmp_path / "bias.json")
    assert "cause_bias.latency" in str(unknown.value)


@pytest.mark.slow
def test_the_service_refuses_an_adapter_made_for_another_base(
    tmp_path: Path, service_settings, shipped_identity: BaseIdentity
) -> None:
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    other = shipped_identity.model_copy(update={"name": "Other 1B", "fingerprint": "f" * 64})
    write_adapter(tmp_path / "lora.gguf", seed=3)
    # "ours" names the shipped Q4_1; the service loads its Q8_0: the same base
    for name, base in (("ours", shipped_identity), ("theirs", other), ("bare", None)):
        shutil.copy(tmp_path / "lora.gguf", adapters / f"{name}.gguf")
        if base is not None:
            write_manifest(manifest_for(base, name), adapters / f"{name}.json")
    shutil.copy(tmp_path / "lora.gguf", adapters / "broken.gguf")
    (adapters / "broken.json").write_text("not json")

    base = prepare_embedded(service_settings.data_dir)  # the bare base, whatever the default
    settings = service_settings.model_copy(update={"adapters_dir": adapters, "model_path": base})
    with serving(settings) as client:
        assert client.app.state.loader.runtime is not None, client.get("/readyz").text
        refused = client.post(
            "/v1/analyze", json=FULL_REPORT, headers={"X-Whyslow-Adapter": "theirs"}
        )
        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert "'Other 1B'" in detail and shipped_identity.name in detail
        broken = client.post(
            "/v1/analyze", json=FULL_REPORT, headers={"X-Whyslow-Adapter": "broken"}
        )
        assert (
            broken.status_code == 409 and "broken.json is not valid JSON" in broken.json()["detail"]
        )
        unknown = client.post(
            "/v1/analyze", json=FULL_REPORT, headers={"X-Whyslow-Adapter": "nobody"}
        )
        assert unknown.status_code == 422 and "'nobody'" in unknown.json()["detail"]
        runtime = client.app.state.loader.runtime
        with pytest.raises(AdapterMismatch):
            runtime.adapters.use("theirs")
        for accepted in ("ours", "bare"):  # a matching manifest, and none at all
            runtime.adapters.use(accepted)
            assert runtime.adapters.current == accepted
        runtime.adapters.use(None)
