"""Count the test suite's checks with `ast`, so that a change to the suite can show it weakened nothing.

    python benchmarks/count_assertions.py [TESTS_DIR]

Prints the test functions, the `assert` statements, and the other checks (`pytest.raises`, `pytest.warns`,
`pytest.approx`, and calls of `assert_*` helpers such as `np.testing.assert_allclose`).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def count(tests: Path) -> dict[str, int]:
    totals = {"files": 0, "tests": 0, "assert": 0, "raises_or_assert_calls": 0}
    for path in sorted(tests.glob("test_*.py")):
        totals["files"] += 1
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                totals["tests"] += 1
            elif isinstance(node, ast.Assert):
                totals["assert"] += 1
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in {"raises", "warns", "approx"} or name.startswith("assert_"):
                    totals["raises_or_assert_calls"] += 1
    return totals


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests"
    result = count(root)
    print(" ".join(f"{k}={v}" for k, v in result.items()),
          f"checks={result['assert'] + result['raises_or_assert_calls']}")
