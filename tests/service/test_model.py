from pathlib import Path

from service.model.embedded import shipped_gguf
from service.model.loader import ModelLoader
from service.settings import Settings


def test_model_path_overrides_the_embedded_model(tmp_path: Path) -> None:
    loader = ModelLoader(Settings(data_dir=tmp_path, model_path=shipped_gguf()))
    loader.start()
    assert loader.wait(60)
    assert loader.analyzer.runtime.info.quantization == "Q4_1"
    assert not (tmp_path / "models").exists()  # nothing prepared when a file is given


def test_a_missing_model_file_is_reported_not_raised(tmp_path: Path) -> None:
    loader = ModelLoader(Settings(data_dir=tmp_path, model_path=tmp_path / "nope.gguf"))
    loader.start()
    assert not loader.wait(10)
    assert "model file not found" in loader.error and "nope.gguf" in loader.error
