"""Summarise a `vcompile build` grid: per model and target, build time, size and the build's parity check.

    vcompile build --model all --target onnx,executorch --out artifacts
    python benchmarks/build_summary.py artifacts/build-grid.json > docs/results/paper-scale-builds.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vcompile.compile.cache import read_manifest


def main(grid_path: str) -> None:
    grid = json.loads(Path(grid_path).read_text())
    print(f"Options: `{json.dumps(grid['options'])}`\n")
    print("| model | target | status | build (s) | size (MB) | parity | max abs error | cosine | XNNPACK FLOPs | "
          "ops outside XNNPACK |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell in grid["cells"]:
        if cell["status"] != "ok":
            print(f"| {cell['model']} | {cell['target']} | {cell['status']}: {cell['reason'][:80]} | | | | | | | |")
            continue
        manifest = read_manifest(Path(cell["path"]).parent) or {}
        parity = manifest.get("parity", {})
        info = manifest.get("info", {})
        share = info.get("delegated_flops_share")
        outside = ", ".join(f"{op} x{n}" for op, n in info.get("non_delegated", {}).items()) or "none"
        max_abs, cosine = parity.get("max_abs"), parity.get("cosine")
        max_abs, cosine = ("-", "-") if max_abs is None else (f"{max_abs:.2e}", f"{cosine:.6f}")
        print(f"| {cell['model']} | {cell['target']} | ok | {manifest.get('build_seconds', 0):.1f} | "
              f"{cell['bytes'] / 2**20:.1f} | {parity.get('status', '-')} | {max_abs} | {cosine} | "
              f"{'-' if share is None else f'{share:.1%}'} | {outside if share is not None else '-'} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "artifacts/build-grid.json")
