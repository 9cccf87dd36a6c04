"""The package's layers import one way: zoo -> data -> compile -> runtimes -> check -> bench -> report -> cli
(errors.py is shared by all).

Every module is parsed with `ast`, and every import in it counts, function-local ones included: a lower layer
that needs a higher one has its code in the wrong place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {name: rank for rank, name in
          enumerate(("zoo", "data", "compile", "runtimes", "check", "bench", "report", "cli"))}
SHARED = {"errors", "__init__", "__main__"}  # vcompile/errors.py and the package's own entry points
# Optional packages that a module may import only inside the function that needs them.
LAZY_ONLY = ("tensorrt", "coremltools", "executorch", "openvino", "nncf", "torchao", "av")
# Installed packages that take a second or more to import and that only some paths use (timm and torchvision for
# the models with a timm trunk, onnx and onnxsim for exporting, onnxruntime for localising): a module may import
# them inside the function that needs them, so that a command imports only what it uses.
SLOW_TO_IMPORT = ("timm", "torchvision", "onnx", "onnxsim", "onnxruntime", "onnxscript")


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if p.relative_to(ROOT).parts[0] in {*LAYERS, *(f"{s}.py" for s in SHARED), "cli.py"}
                  and ".venv" not in p.parts)


def _layer_of(path: Path) -> str:
    first = path.relative_to(ROOT).parts[0]
    return first.removesuffix(".py")


def _imported(path: Path, node: ast.AST) -> list[str]:
    """The vcompile-relative module names an import names (``compile.onnx``, ``errors``), absolute or relative."""
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("vcompile.") for a in node.names if a.name.startswith("vcompile.")]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        module = node.module or ""
        return [module.removeprefix("vcompile.")] if module.startswith("vcompile.") else \
            ([a.name for a in node.names] if module == "vcompile" else [])
    package = list(path.relative_to(ROOT).parent.parts)  # the module's package, relative to vcompile
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    if node.module:
        return [".".join([*base, node.module])]
    return [".".join([*base, a.name]) for a in node.names]


def _violations(path: Path, source: str | None = None) -> list[str]:
    layer = _layer_of(path)
    rank = LAYERS.get(layer)
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        for name in _imported(path, node):
            if rank is not None and LAYERS.get(name.split(".")[0], -1) > rank:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} ({layer}) imports {name}")
    return found


def test_the_checker_sees_relative_absolute_and_local_imports():
    """The rule itself can fail: imports against the order are found in every spelling."""
    source = ("from ..check import parity\nimport vcompile.runtimes\nfrom . import onnx\nfrom ..data import clips\n"
              "def f():\n    from vcompile.bench.case import MODES\n    from .. import cli\n"
              "    from vcompile.report.analysis import speedups\n")
    found = _violations(ROOT / "compile" / "probe.py", source)
    assert [f.split(" imports ")[1] for f in found] == ["check", "runtimes", "bench.case", "cli", "report.analysis"], \
        found


def test_every_import_follows_the_layer_order():
    modules = _modules()
    assert len(modules) > 40  # the walk found the package
    violations = [v for path in modules for v in _violations(path)]
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("package", [p for p in LAYERS if p != "cli"])
def test_heavy_optional_packages_are_imported_lazily(package):
    """tensorrt, coremltools, executorch, openvino and av load only inside the function that uses them."""
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in LAZY_ONLY]
    assert not offenders, offenders


@pytest.mark.parametrize("package", [p for p in LAYERS if p != "cli"])
def test_function_local_imports_are_only_the_heavy_optional_packages(package):
    """Inside the packages every other import is at module level, so a module's dependencies read at its top.
    (cli.py alone imports the layers inside its commands: `vcompile --help` must not wait for torch.) The
    exceptions are the optional packages and those slow to import (`SLOW_TO_IMPORT`)."""
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                else:
                    continue
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] not in (*LAZY_ONLY, *SLOW_TO_IMPORT)]
    assert not offenders, offenders
