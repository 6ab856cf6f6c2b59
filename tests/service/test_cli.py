import subprocess
import sys
from importlib.metadata import EntryPoints
from pathlib import Path

import pytest

from service.cli import dispatch

WHYSLOW = [str(Path(sys.executable).with_name("whyslow"))]
"""The installed ``whyslow`` console script (service/cli.py), which runs each command
through its ``whyslow.commands`` entry point (pyproject.toml)."""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WHYSLOW, *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("serve", "model", "consume", "route", "replay", "demo", "train"):
        assert f"  {command} " in done.stdout


def test_unknown_command_is_an_error_with_usage() -> None:
    done = run("bogus")
    assert done.returncode == 2 and "unknown command 'bogus'" in done.stderr


def test_subcommands_reach_their_package() -> None:
    assert "--direction" in run("replay", "--help").stdout
    assert "--port" in run("serve", "--help").stdout
    assert "export-adapter" in run("train", "--help").stdout


def test_without_its_entry_points_the_command_says_to_install(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert dispatch(["serve"], EntryPoints(())) == 2
    assert "run `make install`" in capsys.readouterr().err


def test_package_entry_points_run() -> None:
    for package in ("baselines", "service", "training"):
        done = subprocess.run(
            [sys.executable, "-m", package, "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr


def test_serve_refuses_a_bad_catalogue_with_one_line(tmp_path) -> None:
    bad = tmp_path / "catalogue.toml"
    bad.write_text("checkout = 3\n")
    done = subprocess.run(
        [*WHYSLOW, "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "WHYSLOW_CATALOGUE": str(bad), "HOME": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"whyslow serve: service catalogue {bad}: 'checkout' must be a string, not int "
        '(e.g. checkout = "CPU-bound")'
    ]
