"""Time and peak memory of ``cuts`` and ``partition --cuts all`` on the big zoo models.

Each measurement runs in a fresh Python process that reports its own peak RSS, so
one step's memory never hides another's. For scale, the same run also measures a
plain ``onnx.load`` of the model, and ``onnx.utils.extract_model`` for ONE middle cut
(the obvious way to split a model, which reloads and copies weights per cut).

    python benchmarks/partition_cost.py --out results/partition_cost.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime

from testbed.report import machine, write_json

MODELS = ("mobilenetv2", "resnet50", "vgg16")

# Each snippet runs in its own process; argv[1] is the model, argv[2] a scratch dir.
STEPS = {
    "load": "import onnx, sys; onnx.load(sys.argv[1])",
    "cuts": (
        "import sys; from models.cuts import find_cuts; from models.graph import GraphIndex;"
        "from models.onnx_io import load_model;"
        "print(len(find_cuts(GraphIndex(load_model(sys.argv[1]).proto))), file=sys.stderr)"
    ),
    "partition_all": (
        "import sys; from models.partition import partition_model;"
        "partition_model(sys.argv[1], sys.argv[2] + '/parts')"
    ),
    "extract_model_one_cut": (
        "import json, sys, onnx.utils;"
        "cuts = json.load(open(sys.argv[2] + '/cuts.json'));"
        "middle = cuts[len(cuts) // 2]['tensor'];"
        "onnx.utils.extract_model(sys.argv[1], sys.argv[2] + '/head.onnx', ['input'], [middle])"
    ),
}

# VmHWM is the peak RSS of this process image only; ru_maxrss would include the
# parent's peak, which Linux carries across fork and exec.
REPORT = (
    "import json, re;"
    "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1);"
    "print(json.dumps({'peak_rss_mb': int(hwm) / 1024}))"
)


def measure(step: str, model: Path, scratch: Path) -> dict[str, float]:
    code = STEPS[step] + "\n" + REPORT
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, str(model), str(scratch)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), **json.loads(result.stdout.strip().splitlines()[-1])}


def bench_model(name: str, work: Path) -> list[dict[str, object]]:
    from models.cuts import find_cuts
    from models.graph import GraphIndex
    from models.onnx_io import load_model
    from models.zoo import build_model

    path = work / f"{name}.onnx"
    print(f"building {name} ...", file=sys.stderr, flush=True)
    onnx.save(build_model(name), str(path))
    cuts = find_cuts(GraphIndex(load_model(path).proto))
    (work / "cuts.json").write_text(json.dumps([c.as_dict() for c in cuts]))
    rows = []
    for step in STEPS:
        print(f"  {name}: {step} ...", file=sys.stderr, flush=True)
        row = {"model": name, "step": step, "cuts": len(cuts), **measure(step, path, work)}
        row["model_mb"] = round(path.stat().st_size / 2**20, 1)
        if step == "partition_all":
            parts = work / "parts"
            row["disk_mb"] = round(sum(p.stat().st_size for p in parts.iterdir()) / 2**20, 1)
        rows.append(row)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| model | cuts | model MB | step | wall s | peak RSS MB | output MB |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['cuts']} | {row['model_mb']} | {row['step']} "
            f"| {row['wall_s']} | {row['peak_rss_mb']:.0f} | {row.get('disk_mb', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/partition_cost.json", help="JSON output file")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of zoo models")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix=f"neukonfig-bench-{name}-") as scratch:
            rows += bench_model(name, Path(scratch))
    report = {
        "benchmark": "partition_cost",
        "machine": machine(),
        "versions": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "rows": rows,
    }
    out = write_json(args.out, report)
    print(table(rows))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
