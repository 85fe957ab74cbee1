"""NEUKONFIG against the servers users would pick instead: one client, one ONNX file,
one run.

    pip install -e '.[peers]'          # MLServer, KServe (and uvloop<0.22, see below)
    python benchmarks/peers.py --out results/peers.json

Systems, all started at once and all serving the same ONNX file (MobileNetV2 by
default) with onnxruntime at one intra-op and one inter-op thread:

- NEUKONFIG at all-edge (the last cut: gateway -> edge partition) and at a middle cut
  (gateway -> edge -> cloud partition), real service processes on loopback;
- MLServer (a custom onnxruntime runtime, ``peer_servers/mlserver_onnx.py``), with its
  defaults otherwise (one parallel inference worker);
- KServe's ModelServer (``peer_servers/kserve_onnx.py``), one worker.

In each round every (system, encoding) gets one phase of the same open-loop client
(``testbed.probe_client.ProbeClient``: a request every 1/rate s whatever the answers
do, seeded inputs rotating, every answer checked against the original model's), JSON
requests and binary ones (the OIP binary tensor extension; a system that refuses it is
reported as such). The first second of a phase is left out as warm-up. Phases are
interleaved, so the machine's drift falls on every system alike, and the ratios to
MLServer are taken per round, then reported as median and range over rounds. After the
rounds, each (system, encoding) gets a closed-loop phase: ``--clients`` requests in
flight, for the throughput.

MLServer 1.7.1's workers crash at start with uvloop 0.22 (SeldonIO/MLServer#2286): the
``peers`` extra pins ``uvloop<0.22``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx

from controller.backends.local import free_port
from models.partition import partition_model
from models.zoo import build_model
from neukonfig.manifest import Manifest
from testbed.loopback_stack import loopback_stack
from testbed.probe_client import (
    ProbeCase,
    ProbeClient,
    answers_match,
    first_output,
    reference_cases,
)
from testbed.process import PeerProcess
from testbed.report import machine, write_json

PEER_SERVERS = Path(__file__).resolve().parent / "peer_servers"
ENCODINGS = ("json", "binary")
WARM_UP_S = 1.0
BASELINE = "mlserver"


def say(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def mlserver(model_file: Path, name: str, work: Path) -> tuple[PeerProcess, str]:
    folder = work / "mlserver"
    (folder / name).mkdir(parents=True)
    port = free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": name,
        "implementation": "mlserver_onnx.OnnxModel",
        "parameters": {"uri": str(model_file)},
    }
    (folder / name / "model-settings.json").write_text(json.dumps(model_settings))
    executable = Path(sys.executable).parent / "mlserver"
    peer = PeerProcess(
        "mlserver",
        [str(executable), "start", str(folder)],
        f"http://127.0.0.1:{port}/v2/models/{name}/ready",
        work / "mlserver.log",
        env={"PYTHONPATH": str(PEER_SERVERS)},
    )
    return peer, f"http://127.0.0.1:{port}/v2/models/{name}/infer"


def kserve(model_file: Path, name: str, work: Path) -> tuple[PeerProcess, str]:
    port = free_port()
    command = [
        sys.executable,
        str(PEER_SERVERS / "kserve_onnx.py"),
        f"--model_name={name}",
        f"--model_file={model_file}",
        f"--http_port={port}",
    ]
    ready = f"http://127.0.0.1:{port}/v2/models/{name}/ready"
    peer = PeerProcess("kserve", command, ready, work / "kserve.log")
    return peer, f"http://127.0.0.1:{port}/v2/models/{name}/infer"


@dataclass(frozen=True)
class Phase:
    system: str
    encoding: str
    round: int
    sent: int
    failed: int
    p50_ms: float
    p99_ms: float
    failure: str | None


async def open_loop_phase(
    url: str, cases: list[ProbeCase], *, json_requests: bool, rate: float, seconds: float
) -> tuple[list[float], int, str | None]:
    """Steady latencies (s) of the answers that were right, the number that were not,
    and the first failure's reason."""
    client = ProbeClient(
        url=url, input_name="input", cases=cases, rate_per_s=rate, json_requests=json_requests
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    records = await client.run(stop)
    steady = [r for r in records if r.sent_s >= WARM_UP_S]
    failed = [r for r in steady if not r.ok]
    latencies = [r.latency_s for r in steady if r.ok]
    return latencies, len(failed), failed[0].reason if failed else None


async def closed_loop_rate(
    url: str, cases: list[ProbeCase], *, json_requests: bool, clients: int, seconds: float
) -> tuple[float, int]:
    """Right answers per second with ``clients`` requests always in flight, and the
    number of wrong or failed ones."""
    bodies = ProbeClient(
        url=url, input_name="input", cases=cases, rate_per_s=1, json_requests=json_requests
    ).cases
    right = wrong = 0
    deadline = time.perf_counter() + seconds

    async def loop(client: httpx.AsyncClient, offset: int) -> None:
        nonlocal right, wrong
        sent = offset
        while time.perf_counter() < deadline:
            (body, headers), expected = bodies[sent % len(bodies)]
            sent += 1
            response = await client.post(url, content=body, headers=headers)
            ok = response.status_code == 200 and answers_match(first_output(response), expected)
            right, wrong = right + ok, wrong + (not ok)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(loop(client, offset) for offset in range(clients)))
        elapsed = time.perf_counter() - started
    return right / elapsed, wrong


def ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 2) if samples else float("nan")


def median_and_range(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "median": round(float(np.median(finite)), 3),
        "min": round(min(finite), 3),
        "max": round(max(finite), 3),
    }


def run_rounds(
    urls: dict[str, str], cases: list[ProbeCase], args: argparse.Namespace
) -> list[Phase]:
    phases = []
    for number in range(args.rounds):
        for system, url in urls.items():
            for encoding in ENCODINGS:
                say(f"round {number + 1}/{args.rounds}: {system}, {encoding} requests")
                latencies, failed, failure = asyncio.run(
                    open_loop_phase(
                        url,
                        cases,
                        json_requests=encoding == "json",
                        rate=args.rate,
                        seconds=args.seconds,
                    )
                )
                sent = len(latencies) + failed
                p50, p99 = ms(latencies, 50), ms(latencies, 99)
                phases.append(Phase(system, encoding, number, sent, failed, p50, p99, failure))
    return phases


def run_closed_loops(
    urls: dict[str, str], cases: list[ProbeCase], args: argparse.Namespace
) -> dict[tuple[str, str], tuple[float, int]]:
    rates = {}
    for system, url in urls.items():
        for encoding in ENCODINGS:
            say(f"closed loop: {system}, {encoding} requests")
            json_requests = encoding == "json"
            rates[system, encoding] = asyncio.run(
                closed_loop_rate(
                    url,
                    cases,
                    json_requests=json_requests,
                    clients=args.clients,
                    seconds=args.seconds,
                )
            )
    return rates


def summarise(phases: list[Phase], rates: dict[tuple[str, str], tuple[float, int]]) -> list[dict]:
    rows = []
    for (system, encoding), (rate, wrong) in rates.items():
        mine = [p for p in phases if p.system == system and p.encoding == encoding]
        baseline = {p.round: p for p in phases if p.system == BASELINE and p.encoding == encoding}
        ratios = [
            p.p50_ms / baseline[p.round].p50_ms
            for p in mine
            if p.round in baseline and not baseline[p.round].failed
        ]
        supported = any(p.failed < p.sent for p in mine)
        rows.append(
            {
                "system": system,
                "encoding": encoding,
                "supported": supported,
                "sent": sum(p.sent for p in mine),
                "failed": sum(p.failed for p in mine),
                "first_failure": next((p.failure for p in mine if p.failure), None),
                "p50_ms": median_and_range([p.p50_ms for p in mine]),
                "p99_ms": median_and_range([p.p99_ms for p in mine]),
                f"p50_over_{BASELINE}": median_and_range(ratios) if supported else None,
                "closed_loop_rps": round(rate, 1),
                "closed_loop_failed": wrong,
            }
        )
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"{args.model}, open loop at {args.rate:g} req/s, {args.rounds} rounds of "
        f"{args.seconds:g} s per system and encoding (median, range over rounds); "
        f"closed loop: {args.clients} in flight for {args.seconds:g} s",
        "",
        f"| system | requests | steady p50 ms | steady p99 ms | p50 / {BASELINE} "
        "| failed | closed-loop req/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r["supported"]:
            reason = r["first_failure"] or "no answer"
            lines.append(f"| {r['system']} | {r['encoding']} | refused: {reason[:60]} |||||")
            continue
        p50, p99, ratio = r["p50_ms"], r["p99_ms"], r[f"p50_over_{BASELINE}"]
        ratio_text = (
            f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})"
            if np.isfinite(ratio["median"])
            else f"n/a ({BASELINE} refuses them)"
        )
        lines.append(
            f"| {r['system']} | {r['encoding']} "
            f"| {p50['median']} ({p50['min']}-{p50['max']}) "
            f"| {p99['median']} ({p99['min']}-{p99['max']}) | {ratio_text} "
            f"| {r['failed']}/{r['sent']} | {r['closed_loop_rps']} |"
        )
    return "\n".join(lines)


def prepare_model(name: str, work: Path) -> tuple[Path, Path, Manifest]:
    """The ONNX file, and its partitions at the all-edge and the middle cut."""
    model_file = work / f"{name}.onnx"
    onnx.save(build_model(name), str(model_file))
    parts = work / "parts"
    probe = partition_model(model_file, parts, cuts="0", name=name)
    cuts = f"{probe.num_cuts // 2},{probe.num_cuts - 1}"
    return model_file, parts, partition_model(model_file, parts, cuts=cuts, name=name)


def bench(args: argparse.Namespace, work: Path) -> dict[str, object]:
    say(f"building and partitioning {args.model} ...")
    model_file, parts, manifest = prepare_model(args.model, work)
    middle, all_edge = manifest.num_cuts // 2, manifest.num_cuts - 1
    cases = reference_cases(model_file, manifest.model.inputs[0])
    peers = [mlserver(model_file, args.model, work), kserve(model_file, args.model, work)]
    urls: dict[str, str] = {}
    try:
        for peer, _url in peers:
            peer.start()
        with (
            loopback_stack(parts, all_edge, args.model, work / "all-edge") as edge_url,
            loopback_stack(parts, middle, args.model, work / "middle") as middle_url,
        ):
            for peer, url in peers:
                say(f"waiting for {peer.name} ...")
                peer.wait_ready()
                urls[peer.name] = url
            urls[f"neukonfig cut {all_edge} (all-edge)"] = edge_url
            urls[f"neukonfig cut {middle}"] = middle_url
            phases = run_rounds(urls, cases, args)
            rates = run_closed_loops(urls, cases, args)
    finally:
        for peer, _url in peers:
            peer.stop()
    rows = summarise(phases, rates)
    return {"rows": rows, "phases": [vars(p) for p in phases], "table": table(rows, args)}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("mlserver", "kserve", "onnxruntime", "uvloop", "fastapi", "uvicorn", "orjson"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/peers.json")
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--rate", type=float, default=5.0, help="open-loop requests per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="in flight, closed loop")
    args = parser.parse_args()
    missing = [p for p, v in versions().items() if p in ("mlserver", "kserve") and "not" in v]
    if missing:
        sys.exit(f"peers.py needs {', '.join(missing)}: pip install -e '.[peers]'")
    with tempfile.TemporaryDirectory(prefix="neukonfig-peers-") as work:
        result = bench(args, Path(work))
    report = {
        "benchmark": "peers",
        "link": "loopback, no shaping; no edge device emulated (every system on this host)",
        "machine": machine(),
        "versions": versions(),
        "settings": vars(args),
        **result,
    }
    out = write_json(args.out, report)
    print(result["table"])
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
