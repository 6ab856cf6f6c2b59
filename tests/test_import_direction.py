"""The packages depend one way: ``service`` at the bottom, ``baselines`` (the consumer) and
``training`` above it, each using only the part of ``service`` it needs. The ``whyslow``
command (service/cli.py) reaches the others through entry points, never an import. Inside
``service`` the model layer knows nothing of what is built on it.

A static scan of every module's imports (function-level ones included, and
``importlib.import_module("...")`` with a literal name), so a wrong-way import fails here,
with the line, before it shows up as an import cycle or as a process loading a stack it
never uses (the service loading torch through ``training``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "baselines", "training")

SHARED_WITH_BASELINES = {
    "service.contract": None,  # the wire contract: reports, telemetry, the week profile
    "service.logs": None,
    "service.tracing": None,
    "service.renamed": None,
    "service.settings": frozenset({"default_data_dir"}),  # not the service's Settings
}
"""What the consumer takes from ``service``: the contract and small shared infrastructure
(None: any name of the module)."""

SHARED_WITH_TRAINING = (
    "service.contract",
    "service.settings",
    "service.prompt",
    "service.playbook",
    "service.rules",  # the evaluation scores the rule engine beside the models
    "service.grounding",
    "service.model",
)
"""What the training pipeline takes from ``service``: the prompt and what the served model
is (its files, runtime, decoder), so that it trains and scores what the service runs; never
the app, its routes or its stores."""

MODEL_MAY_IMPORT = (
    "service.model",
    "service.contract",
    "service.prompt",
    "service.playbook",
    "service.grounding",
    "service.settings",
    "service.logs",
    "service.tracing",
)
"""The model layer's view of ``service``: what a prompt and an answer are. What is built on
the model (service.analyze, service.analyses, service.api, service.main...) is not."""


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    name: str | None  # ``from target import name`` of a name that is not a module
    where: str  # path:line

    def __str__(self) -> str:
        what = f"{self.target}.{self.name}" if self.name else self.target
        return f"{self.where}: {self.module} imports {what}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The module a ``from`` import names, a relative one resolved against its package."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def literal_import_module(node: ast.AST) -> str | None:
    """The name in ``importlib.import_module("name")`` (or a bare ``import_module``)."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    first = node.args[0]
    if called == "import_module" and isinstance(first, ast.Constant):
        return first.value if isinstance(first.value, str) else None
    return None


def imports_in(source: str, path: Path) -> list[Import]:
    """Every import of the module at ``path`` (under ROOT) whose text is ``source``."""
    module = module_name(path)
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, str(path))):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, None, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = absolute(node, module, path)
            for alias in node.names:  # ``from service import playbook``: a module
                sub = f"{target}.{alias.name}"
                found.append(
                    Import(module, sub, None, where)
                    if is_module(sub)
                    else Import(module, target, alias.name, where)
                )
        elif (name := literal_import_module(node)) is not None:
            found.append(Import(module, name, None, where))
    return found


def scan() -> tuple[Import, ...]:
    return tuple(
        found
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for found in imports_in(path.read_text(), path)
    )


@pytest.fixture(scope="module")
def imports() -> tuple[Import, ...]:
    return scan()


def within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def package_of(name: str) -> str:
    return name.split(".")[0]


def wrong(imports: tuple[Import, ...], importer: str, allowed: Callable[[Import], bool]) -> str:
    """The imports of ``importer``'s modules that ``allowed`` refuses, one a line."""
    return "\n".join(str(i) for i in imports if within(i.module, importer) and not allowed(i))


def test_the_scan_sees_every_package_and_kind_of_import(imports: tuple[Import, ...]) -> None:
    """A scan that found nothing would pass every rule below."""
    assert {package_of(i.module) for i in imports} == set(PACKAGES)
    seen = {(i.module, i.target, i.name) for i in imports}
    assert ("baselines.cli", "service.logs", "configure_logging") in seen  # module level
    assert ("baselines.cli", "baselines.consumer", "TelemetryConsumer") in seen  # in a function
    assert ("service.prompt", "service.playbook", None) in seen  # a module from its package


def below_the_others(i: Import) -> bool:
    """The service's rule: it imports neither of the packages built on it."""
    return package_of(i.target) not in PACKAGES[1:]


def test_service_imports_none_of_the_packages_above_it(imports: tuple[Import, ...]) -> None:
    refused = wrong(imports, "service", below_the_others)
    assert not refused, refused


def test_the_service_rule_refuses_training_however_it_is_named() -> None:
    """A dispatcher that named ``training.cli`` itself, in a function or as a string, would
    break the rule as much as a module-level import."""
    source = (
        "import importlib\n"
        "from importlib import import_module\n\n"
        "def train(argv):\n"
        "    from training import cli\n"
        '    importlib.import_module("training.cli")\n'
        '    return import_module("training.cli").main(argv)\n'
    )
    found = imports_in(source, ROOT / "service" / "cli.py")
    refused = wrong(tuple(found), "service", below_the_others).splitlines()
    assert refused == [
        "service/cli.py:5: service.cli imports training.cli",
        "service/cli.py:6: service.cli imports training.cli",
        "service/cli.py:7: service.cli imports training.cli",
    ]


def test_baselines_takes_only_the_contract_and_shared_infrastructure_from_service(
    imports: tuple[Import, ...],
) -> None:
    def allowed(i: Import) -> bool:
        if package_of(i.target) == "training":
            return False
        if package_of(i.target) != "service":
            return True
        for shared, names in SHARED_WITH_BASELINES.items():
            if within(i.target, shared):
                return names is None or i.name in names
        return False

    refused = wrong(imports, "baselines", allowed)
    assert not refused, refused


def test_training_takes_only_the_prompt_and_the_model_from_service(
    imports: tuple[Import, ...],
) -> None:
    def allowed(i: Import) -> bool:
        if package_of(i.target) == "baselines":
            return False
        return package_of(i.target) != "service" or any(
            within(i.target, shared) for shared in SHARED_WITH_TRAINING
        )

    refused = wrong(imports, "training", allowed)
    assert not refused, refused


def test_the_model_layer_knows_nothing_built_on_it(imports: tuple[Import, ...]) -> None:
    refused = wrong(
        imports,
        "service.model",
        lambda i: (
            package_of(i.target) != "service"
            or any(within(i.target, lower) for lower in MODEL_MAY_IMPORT)
        ),
    )
    assert not refused, refused


def test_importing_the_service_loads_no_training_module() -> None:
    """What the rules above promise, as the interpreter sees it: the app, its CLI, the
    package itself and the ``whyslow`` command's help start without the training pipeline
    (nor its torch)."""
    for start in (
        "import service",
        "import service.main",
        "import service.cli",
        "from service.cli import whyslow; whyslow(['--help'])",
    ):
        check = (
            f"import sys; {start}; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'torch')); "
            "print(loaded, file=sys.stderr); sys.exit(bool(loaded))"
        )
        done = subprocess.run(
            [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        assert done.returncode == 0, f"{start} loaded {done.stderr.strip()}"
