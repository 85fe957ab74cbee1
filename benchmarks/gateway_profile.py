"""Where the gateway's time goes for one JSON and one binary infer request, sampled by
py-spy on the real gateway process.

    .venv/bin/python -m benchmarks.gateway_profile --out results/gateway_profile.json

A middle cut of the model is served by real uvicorn processes on loopback (as in
``data_path.py``). For each request form, the same input is sent sequentially while
py-spy samples the gateway process (on-CPU samples only, 1000 Hz); the report gives each
stage's share of the gateway's samples, from its stack frames, and the busiest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import onnx

from benchmarks.data_path import served, start_stack
from models.partition import partition_model
from models.runtime import sample_input
from models.zoo import build_model
from testbed.probe_client import binary_infer_body, json_infer_body
from testbed.report import machine, write_json

SAMPLE_RATE_HZ = 1000
# The gateway's own stages: a sample belongs to the first of these with a frame anywhere in
# its stack (innermost work first); each is (function name or None, file path part or None).
STAGES: tuple[tuple[str, tuple[tuple[str | None, str | None], ...]], ...] = (
    ("JSON parse (orjson / json)", (("_parse_json", None), ("split_body", None))),
    ("JSON data -> numpy (checks, conversion)", (("_from_json", None),)),
    ("binary tensors -> numpy views", (("_from_binary", None),)),
    ("request checks (OIP header)", (("parse_infer_request", None),)),
    ("reading the body", (("read_body", None), ("_read_limited", None))),
    ("wire frame encode", (("encode", "neukonfig/wire.py"),)),
    ("wire frame decode", (("decode", "neukonfig/wire.py"),)),
    ("response encode (OIP)", (("encode_infer_response", None),)),
    ("call to the edge partition", ((None, "neukonfig/peer_client.py"),)),
)
# Otherwise the library its innermost frame is in: every stack has the server and the
# event loop at its root, so only the innermost says who was running.
LIBRARIES = (
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("HTTP server (uvicorn, h11/httptools)", ("uvicorn", "httptools", "h11")),
    ("ASGI framework (starlette, fastapi)", ("starlette", "fastapi")),
    ("event loop (asyncio, uvloop)", ("asyncio", "uvloop")),
)


def _frame(text: str) -> tuple[str, str]:
    """py-spy's ``function (path:line)`` as (function, path)."""
    name, _, where = text.strip().partition(" (")
    return name, where.rpartition(":")[0]


def stage_of(stack: str) -> str:
    frames = [_frame(text) for text in reversed(stack.split(";"))]
    for stage, needles in STAGES:
        for name, path in frames:
            if any(
                (want is None or want == name) and (part is None or part in path)
                for want, part in needles
            ):
                return stage
    for _, path in frames:
        for stage, parts in LIBRARIES:
            if any(part in path for part in parts):
                return stage
    return "other"


def aggregate(raw: str) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Stage shares and the busiest functions (self time), as percent of all samples."""
    stages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        stages[stage_of(stack)] += count
        own[stack.split(";")[-1].strip()] += count
    if not total:
        raise SystemExit("py-spy recorded no samples of the gateway")
    share = {stage: round(100 * n / total, 1) for stage, n in stages.most_common()}
    busiest = [(frame, round(100 * n / total, 1)) for frame, n in own.most_common(12)]
    return share, busiest


def py_spy() -> str:
    """py-spy from this interpreter's environment (the dev extra), or from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("needs py-spy: .venv/bin/pip install py-spy (in the dev extra)")
    return found


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", str(SAMPLE_RATE_HZ), "--format", "raw", "--output", str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def profile_form(url: str, pid: int, body: bytes, headers: dict, seconds: int, out: Path) -> dict:
    asyncio.run(served(url, body, headers, 20))  # warm
    recorder = record(pid, seconds, out)
    stop = threading.Event()
    answered = 0

    def load() -> None:
        nonlocal answered
        while not stop.is_set():
            asyncio.run(served(url, body, headers, 10))
            answered += 20

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    _, errors = recorder.communicate(timeout=seconds + 60)
    stop.set()
    sender.join(timeout=60)
    if recorder.returncode != 0:
        raise SystemExit(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
    share, busiest = aggregate(out.read_text())
    return {"request_bytes": len(body), "requests": answered, "stages": share, "busiest": busiest}


def table(report: dict) -> str:
    forms = report["forms"]
    stages = list(dict.fromkeys(s for f in forms.values() for s in f["stages"]))
    lines = [
        "| gateway stage (% of on-CPU samples) | " + " | ".join(forms) + " |",
        "|---|" + "---:|" * len(forms),
    ]
    for stage in stages:
        cells = " | ".join(str(f["stages"].get(stage, 0.0)) for f in forms.values())
        lines.append(f"| {stage} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/gateway_profile.json")
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--seconds", type=int, default=10, help="sampling time per form")
    args = parser.parse_args()
    py_spy()  # before building anything
    with tempfile.TemporaryDirectory(prefix="neukonfig-gateway-profile-") as work_dir:
        work = Path(work_dir)
        print(f"{args.model}: building and partitioning ...", file=sys.stderr, flush=True)
        onnx.save(build_model(args.model), str(work / "model.onnx"))
        cuts = partition_model(work / "model.onnx", work / "parts", cuts="0", name=args.model)
        cut = cuts.num_cuts // 2
        manifest = partition_model(
            work / "model.onnx", work / "parts", cuts=str(cut), name=args.model
        )
        batch = sample_input(manifest.model.inputs[0], batch=1, seed=0)
        services, url = start_stack(work / "parts", cut, args.model, work)
        gateway = services[0]
        assert gateway.process is not None
        try:
            forms = {}
            for form, make in (("JSON", json_infer_body), ("binary", binary_infer_body)):
                print(f"{args.model}: sampling {form} requests ...", file=sys.stderr, flush=True)
                body, headers = make("input", batch)
                started = time.perf_counter()
                forms[form] = profile_form(
                    url, gateway.process.pid, body, headers, args.seconds, work / f"{form}.txt"
                )
                forms[form]["seconds"] = round(time.perf_counter() - started, 1)
        finally:
            for service in services:
                service.stop()
    report = {
        "benchmark": "gateway_profile",
        "model": args.model,
        "cut": cut,
        "link": "loopback, no shaping",
        "sampler": f"py-spy record --rate {SAMPLE_RATE_HZ} (on-CPU samples of the gateway)",
        "machine": machine(),
        "forms": forms,
    }
    out = write_json(args.out, report)
    print(table(report))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
