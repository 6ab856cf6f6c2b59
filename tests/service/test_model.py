from pathlib import Path

from service.model.embedded import shipped_gguf
from service.model.loader import ModelLoader
from service.model.tuned import cause_bias
from service.settings import Settings


def test_model_path_overrides_the_embedded_model(tmp_path: Path) -> None:
    loader = ModelLoader(Settings(data_dir=tmp_path, model_path=shipped_gguf()))
    loader.start()
    assert loader.wait(60)
    assert loader.runtime.info.quantization == "Q4_1"
    assert loader.runtime.cause_bias == {}  # a given file brings no calibration
    assert not (tmp_path / "models").exists()  # nothing prepared when a file is given


def test_the_tuned_default_is_served_with_its_calibration(service_settings: Settings) -> None:
    """The shipped adapter's per-cause bias (its manifest) is what the served model adds
    when it names a cause: the eval's numbers are the service's."""
    loader = ModelLoader(service_settings)
    loader.start()
    assert loader.wait(120), loader.error
    try:
        assert loader.runtime.info.quantization == "Q8_0"
        assert loader.runtime.cause_bias == cause_bias() != {}
    finally:
        loader.runtime.close()


def test_a_missing_model_file_is_reported_not_raised(tmp_path: Path) -> None:
    loader = ModelLoader(Settings(data_dir=tmp_path, model_path=tmp_path / "nope.gguf"))
    loader.start()
    assert not loader.wait(10)
    assert "model file not found" in loader.error and "nope.gguf" in loader.error
