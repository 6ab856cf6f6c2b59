"""deploy/ollama/Modelfile is what the training code writes for the served model, so it
can never drift from the template, stops and system prompt the service decodes with."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.model.tuned import prepare_tuned
from service.prompt import SYSTEM_PROMPT
from service.settings import Settings
from tests.deploy.files import DEPLOY
from training.export import write_modelfile


@pytest.mark.slow
def test_the_committed_modelfile_is_the_one_written_for_the_served_model(
    service_settings: Settings, tmp_path: Path
) -> None:
    """Regenerated for the merged, tuned Q8_0 that `whyslow model` prepares (FROM names
    that file, relative: it is put beside the Modelfile). A retrained adapter changes the
    file name; regenerate with write_modelfile(prepare_tuned(data_dir), SYSTEM_PROMPT)."""
    served = prepare_tuned(service_settings.data_dir)
    beside = tmp_path / served.name  # the Modelfile is written beside the GGUF it names
    beside.symlink_to(served)
    expected = write_modelfile(beside, SYSTEM_PROMPT).read_text()
    assert (DEPLOY / "ollama" / "Modelfile").read_text() == expected
    assert expected.startswith(f"FROM ./{served.name}\n")
