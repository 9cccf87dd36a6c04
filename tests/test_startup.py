"""Start-up: a command imports only what it uses. Listing the zoo and a cache hit import neither timm and
torchvision (a second or two, for the models with a timm trunk) nor onnx, onnxsim and onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys

from vcompile.compile import BuildOptions, build

SLOW = ("timm", "torchvision", "onnx", "onnxsim", "onnxruntime")


def _imported_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which of the slow packages it imported, and what it printed last."""
    probe = (f"import sys\n{code}\n"
             f"print(__import__('json').dumps(sorted(m for m in {SLOW!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"slow": json.loads(done.stdout.strip().splitlines()[-1]), "stdout": done.stdout}


def test_every_layer_imports_without_the_slow_packages():
    layers = ["zoo", "zoo.flops", "data", "compile", "compile.onnx", "runtimes", "check.parity", "check.localize",
              "bench.builds", "bench.sweep", "bench.selection", "report.documents"]
    found = _imported_after("\n".join(f"import vcompile.{m}" for m in layers))
    assert found["slow"] == [], found


def test_listing_the_zoo_builds_no_model():
    found = _imported_after("from vcompile.zoo import list_models\nfrom vcompile.zoo.flops import model_cost\n"
                            "print([model_cost(n).params for n in list_models()])")
    assert found["slow"] == [], "model_cost at the paper's shape should read the spec, not build the model"


def test_a_cache_hit_imports_no_exporter(tmp_path):
    first = build("x3d-xs", "onnx", BuildOptions(tiny=True, batch=1), out=tmp_path)
    assert not first.cached
    build_again = ("from vcompile.check.parity import build_verified\nfrom vcompile.compile import BuildOptions\n"
                   f"a = build_verified('x3d-xs', 'onnx', BuildOptions(tiny=True, batch=1), out={str(tmp_path)!r})\n")
    found = _imported_after(build_again + "print(a.cached, a.key)")
    assert found["stdout"].splitlines()[-2] == f"True {first.key}"
    # Verifying an unverified cached artifact runs it in onnxruntime; a verified one is only hashed.
    assert found["slow"] == ["onnxruntime"], found
    again = _imported_after(build_again + "print(a.cached, a.manifest['parity']['status'])")
    assert again["stdout"].splitlines()[-2] == "True pass" and again["slow"] == [], again
