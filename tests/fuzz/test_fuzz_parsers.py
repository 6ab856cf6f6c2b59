"""The fuzz harness runs, and finds no crash in 20 seconds (the 5-minute run is
``python tests/fuzz/fuzz_parsers.py --seconds 300``). It is a real, coverage-guided run: the
corpus grows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("fuzz_parsers.py")


@pytest.mark.slow
def test_the_parsers_survive_twenty_seconds_of_fuzzing(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (dev extra) has wheels for x86-64 Linux only")
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--seconds", "20", "--artifacts", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-6000:]
    assert "crashes: 0" in done.stdout, done.stdout
    executed = re.search(r"inputs executed: (\d+)", done.stdout)
    assert executed and int(executed[1]) > 1000, done.stdout
    corpus = re.search(r"corpus (\d+) inputs", done.stdout)
    assert corpus and int(corpus[1]) > 8, done.stdout  # more than the 8 seeds: it explored
    assert not list(tmp_path.iterdir()), "a crashing input was written"
