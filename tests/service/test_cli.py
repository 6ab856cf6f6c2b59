import subprocess
import sys

WHYSLOW = [sys.executable, "-c", "import sys; from service.cli import whyslow; sys.exit(whyslow())"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WHYSLOW, *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("serve", "consume", "replay", "demo", "train"):
        assert f"  {command} " in done.stdout


def test_unknown_command_is_an_error_with_usage() -> None:
    done = run("bogus")
    assert done.returncode == 2 and "unknown command 'bogus'" in done.stderr


def test_subcommands_reach_their_package() -> None:
    assert "--direction" in run("replay", "--help").stdout
    assert "--port" in run("serve", "--help").stdout


def test_package_entry_points_run() -> None:
    for package in ("baselines", "service", "training"):
        done = subprocess.run(
            [sys.executable, "-m", package, "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
