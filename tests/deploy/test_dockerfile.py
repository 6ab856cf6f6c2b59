"""deploy/Dockerfile: its build runs the README's install and prepares the model, its
runtime stage is slim, non-root and health-checked. No image can be built here (no
container engine), so the instructions are read and compared with what they rely on."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field

from tests.deploy.files import DEPLOY, ROOT, app_statuses


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for rest in self.args("ENV"):
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                values[name] = value
        return values


def stages() -> list[Stage]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuation lines
    joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result: list[Stage] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else str(len(result))
            result.append(Stage(name))
        elif result:
            result[-1].instructions.append((word.upper(), rest.strip()))
    return result


def stage(name: str) -> Stage:
    return next(s for s in stages() if s.name == name)


def test_it_is_multi_stage_and_the_runtime_is_the_last_stage() -> None:
    assert [s.name for s in stages()] == ["build", "runtime"]


def test_the_build_runs_the_readme_install_and_prepares_the_model() -> None:
    """The image is installed the way the README installs (deploy/local/install.sh, which
    builds llama-cpp-python with -DGGML_NATIVE=OFF: a native build crashes on AMX CPUs),
    and `whyslow model` puts the merged Q8_0 in the image's data directory."""
    build = stage("build")
    runs = " ".join(build.args("RUN"))
    assert "deploy/local/install.sh" in runs and "whyslow model" in runs
    assert "deploy/local/install.sh" in (ROOT / "README.md").read_text()
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in (ROOT / "deploy/local/install.sh").read_text()
    assert "cmake" in runs and "g++" in runs
    # runtime only: no dev or training extras in the image
    assert build.env().get("EXTRAS") == ""


def test_the_runtime_finds_the_model_the_build_prepared() -> None:
    """The served model is looked up in WHYSLOW_DATA_DIR: the runtime must copy the build's
    data directory and use the same path, or every start merges the model again (529 MB
    peak RSS instead of about 310 MB, and a writable data directory)."""
    data_dir = stage("build").env()["WHYSLOW_DATA_DIR"]
    runtime = stage("runtime")
    assert runtime.env()["WHYSLOW_DATA_DIR"] == data_dir
    copies = [shlex.split(c) for c in runtime.args("COPY") if "--from=build" in c]
    copied = {c[-1] for c in copies}
    venv = stage("build").env()["VENV"]
    assert {data_dir, venv, "/opt/whyslow/app"} <= copied
    data_copy = next(c for c in copies if c[-1] == data_dir)
    assert any(flag.startswith("--chown=10001") for flag in data_copy)
    assert f"{venv}/bin" in runtime.env()["PATH"]


def test_the_runtime_is_slim_non_root_and_health_checked_on_a_real_path() -> None:
    runtime = stage("runtime")
    assert not any("cmake" in run or "g++" in run for run in runtime.args("RUN"))
    user = runtime.args("USER")[-1].split(":")[0]
    assert user not in ("root", "0")
    healthcheck = runtime.args("HEALTHCHECK")[-1]
    path = re.search(r"127\.0\.0\.1:8000(/\w+)", healthcheck)
    assert path, healthcheck
    # 503 until the model is loaded, then 200: the healthcheck waits for readiness
    assert app_statuses(path.group(1)) == {path.group(1): 503}
    command = shlex.split(runtime.args("CMD")[-1].replace(",", " ").strip("[]"))
    assert [w.strip('"') for w in command][:2] == ["whyslow", "serve"]


def ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns
    )


def test_what_the_build_copies_exists_and_is_not_ignored() -> None:
    """A COPY of a missing or .dockerignore'd path fails the build; the ignore file must
    keep out .venv (gigabytes with torch) and .git."""
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignored(".venv", patterns) and ignored(".git", patterns)
    for copy in stage("build").args("COPY"):
        *sources, _ = shlex.split(copy)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not ignored(source, patterns), source
