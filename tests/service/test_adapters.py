"""LoRA adapters swapped at runtime on one loaded base, with the real model."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import gguf
import numpy as np
import pytest

from service.analyze import Analyzer
from service.assess import assess
from service.contract import AnomalyReport, ProbableCause
from service.model.embedded import shipped_gguf
from service.model.gguf_files import (
    AdapterManifest,
    BaseIdentity,
    base_identity,
    write_manifest,
)
from service.model.runtime import ModelRuntime
from service.model.tuned import prepare_tuned
from tests.service.serving import serving
from tests.service.test_api import FULL_REPORT


def write_adapter(path: Path, seed: int, rank: int = 8, scale: float = 0.05) -> None:
    """A LoRA adapter in llama.cpp's GGUF form for the embedded base: lora_a [r, in] and
    lora_b [out, r] on every layer's q and v projections, random but seeded."""
    base = gguf.GGUFReader(str(shipped_gguf()))
    layers = int(base.fields["llama.block_count"].contents())
    hidden = int(base.fields["llama.embedding_length"].contents())
    heads = int(base.fields["llama.attention.head_count"].contents())
    kv_dim = hidden // heads * int(base.fields["llama.attention.head_count_kv"].contents())
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for layer in range(layers):
        for name, out in (("attn_q", hidden), ("attn_v", kv_dim)):
            a = rng.normal(0, scale, (rank, hidden)).astype(np.float32)
            b = rng.normal(0, scale, (out, rank)).astype(np.float32)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def manifest_for(base: BaseIdentity, name: str = "team-a") -> AdapterManifest:
    return AdapterManifest(
        name=name,
        base=base,
        lora={"r": 8, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        schema_version="1",
        data_sha256="0" * 64,
        seed=1,
        metrics={"cause_accuracy": 0.9},
        created=datetime(2026, 11, 23, tzinfo=UTC),
    )


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("adapters")
    write_adapter(directory / "team-a.gguf", seed=1, scale=0.1)
    write_adapter(directory / "team-b.gguf", seed=2, scale=0.1)
    return directory


@pytest.mark.slow
def test_adapters_answer_differently_and_switching_back_restores_exactly(
    adapters_dir: Path, service_settings
) -> None:
    s = service_settings
    runtime = ModelRuntime(prepare_tuned(s.data_dir), 2048, 2, 0, s.repeat_penalty, adapters_dir)
    analyzer = Analyzer(runtime, 1400)
    report = AnomalyReport.model_validate(FULL_REPORT)

    def answer(adapter: str | None) -> str:
        diagnosis = analyzer.diagnose(report, time.monotonic() + 120, adapter=adapter)
        return diagnosis.model_dump_json()

    base, a, b = answer(None), answer("team-a"), answer("team-b")
    assert len({base, a, b}) == 3
    started = time.perf_counter()
    runtime.adapters.use("team-a")
    switch_ms = (time.perf_counter() - started) * 1000
    assert answer("team-a") == a and answer(None) == base and answer("team-b") == b
    print(f"\nswitch to a loaded adapter: {switch_ms:.3f} ms")


MIXED_REPORT = FULL_REPORT | {
    "context": {
        "cpu_pct": 97,
        "cpu_baseline_pct": 45,
        "memory_pct": 85,
        "memory_baseline_pct": 50,
        "downstream": [
            {
                "service": "payments",
                "operation": "POST /charge",
                "p95_ms": 500,
                "baseline_p95_ms": 60,
            }
        ],
    },
    "evidence": [],
}
"""CPU, memory and a dependency all higher, none decisive: the facts support three causes
and the model chooses among them, which is where a calibration's bias acts (a cause the
facts settle is written as given, whatever the bias)."""


@pytest.mark.slow
def test_an_adapters_calibration_comes_with_it(service_settings, tmp_path: Path) -> None:
    write_adapter(tmp_path / "plain.gguf", seed=1, scale=0.1)
    write_adapter(tmp_path / "calibrated.gguf", seed=1, scale=0.1)
    model = prepare_tuned(service_settings.data_dir)
    lifted = ProbableCause.memory_pressure
    manifest = manifest_for(base_identity(model), "calibrated")
    write_manifest(
        manifest.model_copy(update={"cause_bias": {lifted: 40.0}}), tmp_path / "calibrated.json"
    )
    runtime = ModelRuntime(model, 2048, 2, 0, 1.0, tmp_path)
    analyzer = Analyzer(runtime, 1400)
    report = AnomalyReport.model_validate(MIXED_REPORT)
    assert assess(report).allowed == (
        ProbableCause.downstream_dependency,
        ProbableCause.local_cpu_saturation,
        lifted,
    )
    try:
        base, plain, calibrated, base_again = (
            analyzer.diagnose(report, time.monotonic() + 120, adapter=name).probable_cause
            for name in (None, "plain", "calibrated", None)
        )
    finally:
        runtime.close()
    assert lifted not in (base, plain, base_again), (base, plain, base_again)
    assert calibrated == lifted


def test_models_lists_adapters_and_an_unknown_one_is_refused(
    adapters_dir, service_settings, tmp_path
) -> None:
    settings = service_settings.model_copy(
        update={"data_dir": tmp_path, "adapters_dir": adapters_dir}
    )
    with serving(settings) as client:
        models = client.get("/v1/models").json()
        assert models["adapters"] == ["team-a", "team-b"]
        assert models["base"]["quantization"] == "Q8_0"
        refused = client.post(
            "/v1/analyze", json=FULL_REPORT, headers={"X-Whyslow-Adapter": "team-z"}
        )
        assert refused.status_code == 422 and "team-z" in refused.json()["detail"]
        answered = client.post(
            "/v1/analyze",
            json=FULL_REPORT | {"id": "adapter-b"},
            headers={"X-Whyslow-Adapter": "team-b"},
        )
        assert answered.status_code == 200
        assert answered.json()["model"]["adapter"] == "team-b"
