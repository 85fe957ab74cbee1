"""Latency and throughput of the served path (gateway -> edge -> cloud on loopback)
against running the same head and tail sessions in one process.

    python benchmarks/data_path.py --out results/data_path.json

For each model a middle cut is served by real uvicorn processes; both sides use one
onnxruntime thread, in the services and in the in-process baseline, so the difference
is the cost of the services and the wire: HTTP, framing, the OIP codec and routing.

Served latency is measured twice: with httpx as the benchmark's client (what a typical
user's client costs) and with ``neukonfig.peer_client.PeerClient`` (about 0.5 ms cheaper per
request on loopback), so the report separates the client's cost from the served path's.
It is measured once more with the same input as a REST user's JSON request.

For tiny, small binary requests are also timed alone and beside a stream of 1.5 MB JSON
requests (one in flight at a time, from another thread), in alternating phases of one run:
the ratio of their medians is what one big JSON request costs everyone else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime

from controller.backends.local import free_port
from models.partition import partition_model
from models.runtime import Role, load_partition, sample_input
from models.zoo import build_model
from neukonfig.manifest import Manifest
from neukonfig.peer_client import PeerClient
from neukonfig.tls import Certificates
from testbed.loopback_stack import loopback_stack
from testbed.probe_client import binary_infer_body, json_infer_body
from testbed.process import PeerProcess
from testbed.report import machine, write_json

CONCURRENCY = (1, 4, 16)
TLS_CONCURRENCY = (1, 4)
BIG_JSON_BYTES = 1_500_000
BIG_JSON_RATES = (5.0, 0.0)  # per second; 0 is back to back, one in flight
ISOLATION_PHASES = 3


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 3)


def in_process(parts: Path, manifest: Manifest, cut: int, batch: np.ndarray, n: int) -> list[float]:
    head = load_partition(parts, cut, Role.EDGE, threads=1, manifest=manifest)
    tail = load_partition(parts, cut, Role.CLOUD, threads=1, manifest=manifest)
    feeds = {"input": batch}
    for _ in range(10):
        tail.run(head.run(feeds))
    times = []
    for _ in range(n):
        started = time.perf_counter()
        tail.run(head.run(feeds))
        times.append(time.perf_counter() - started)
    return times


async def served(url: str, body: bytes, headers: dict[str, str], n: int) -> list[float]:
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(10):
            (await client.post(url, content=body, headers=headers)).raise_for_status()
        times = []
        for _ in range(n):
            started = time.perf_counter()
            response = await client.post(url, content=body, headers=headers)
            times.append(time.perf_counter() - started)
            response.raise_for_status()
    return times


@contextlib.contextmanager
def echo_floor(work: Path) -> Iterator[str]:
    """``benchmarks.echo_server`` in its own process; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.echo_server", "--port", str(port)]
    ready = f"http://127.0.0.1:{port}/health/live"
    server = PeerProcess("echo floor", command, ready, work / "echo.log").start()
    try:
        server.wait_ready()
        yield f"http://127.0.0.1:{port}/echo"
    finally:
        server.stop()


async def served_by_peer_client(
    url: str, body: bytes, headers: dict[str, str], n: int
) -> list[float]:
    base, path = url.split("/v2/", 1)
    async with PeerClient(base, timeout=60, connect_timeout=5) as client:
        for _ in range(10):
            await client.post(f"/v2/{path}", content=body, headers=headers)
        times = []
        for _ in range(n):
            started = time.perf_counter()
            response = await client.post(f"/v2/{path}", content=body, headers=headers)
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"served path answered {response.status_code}: {response.text}")
    return times


async def throughput(
    url: str, body: bytes, headers: dict[str, str], clients: int, seconds: float
) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            (await client.post(url, content=body, headers=headers)).raise_for_status()
            done += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return round(done / elapsed, 1)


def big_json_stream(
    url: str, body: bytes, headers: dict[str, str], interval_s: float, stop: threading.Event
) -> int:
    """Send ``body`` one at a time, starting one every ``interval_s`` (0: back to back),
    until ``stop``; the number answered."""
    answered = 0
    with httpx.Client(timeout=60) as client:
        next_at = time.perf_counter()
        while not stop.wait(max(0.0, next_at - time.perf_counter())):
            next_at += interval_s
            client.post(url, content=body, headers=headers).raise_for_status()
            answered += 1
    return answered


async def beside_big_json(
    url: str, small: tuple[bytes, dict[str, str]], batch: np.ndarray, n: int, big_rate: float
) -> dict[str, object]:
    """Small requests' latency alone and beside a stream of big JSON requests at
    ``big_rate`` per second (0: back to back), in alternating phases."""
    row, _ = json_infer_body("input", batch[:1])
    rows = max(1, round(BIG_JSON_BYTES / len(row)))
    big, big_headers = json_infer_body("input", np.repeat(batch[:1], rows, axis=0))
    interval = 1 / big_rate if big_rate else 0.0
    alone: list[float] = []
    beside: list[float] = []
    big_answered = 0
    for _ in range(ISOLATION_PHASES):
        alone += await served(url, *small, n)
        stop = threading.Event()
        stream = asyncio.create_task(
            asyncio.to_thread(big_json_stream, url, big, big_headers, interval, stop)
        )
        beside += await served(url, *small, n)
        stop.set()
        big_answered += await stream
    return {
        "big_request_bytes": len(big),
        "big_rate_per_s": big_rate,  # 0: back to back
        "big_requests_answered": big_answered,
        "small_alone_p50_ms": percentile_ms(alone, 50),
        "small_alone_p99_ms": percentile_ms(alone, 99),
        "small_beside_p50_ms": percentile_ms(beside, 50),
        "small_beside_p99_ms": percentile_ms(beside, 99),
        "p50_ratio": round(percentile_ms(beside, 50) / percentile_ms(alone, 50), 3),
    }


def bench_model(name: str, work: Path, n: int, seconds: float) -> dict[str, object]:
    print(f"{name}: building and partitioning ...", file=sys.stderr, flush=True)
    onnx.save(build_model(name), str(work / f"{name}.onnx"))
    probe = partition_model(work / f"{name}.onnx", work / "parts", cuts="0", name=name)
    cut = probe.num_cuts // 2
    manifest = partition_model(work / f"{name}.onnx", work / "parts", cuts=str(cut), name=name)
    batch = sample_input(manifest.model.inputs[0], batch=1, seed=0)
    print(f"{name}: in-process baseline at cut {cut} ...", file=sys.stderr, flush=True)
    baseline = in_process(work / "parts", manifest, cut, batch, n)
    with loopback_stack(work / "parts", cut, name, work) as url:
        body, headers = binary_infer_body("input", batch)
        print(f"{name}: served latency ...", file=sys.stderr, flush=True)
        path = asyncio.run(served(url, body, headers, n))
        with echo_floor(work) as echo:
            floor = asyncio.run(served(echo, body, headers, n))
        peer_path = asyncio.run(served_by_peer_client(url, body, headers, n))
        json_body, json_headers = json_infer_body("input", batch)
        json_path = asyncio.run(served(url, json_body, json_headers, n))
        isolation = None
        if name == "tiny":
            print(f"{name}: beside 1.5 MB JSON requests ...", file=sys.stderr, flush=True)
            isolation = [
                asyncio.run(beside_big_json(url, (body, headers), batch, n, rate))
                for rate in BIG_JSON_RATES
            ]
        rates = {}
        for clients in CONCURRENCY:
            print(f"{name}: throughput with {clients} clients ...", file=sys.stderr, flush=True)
            rates[str(clients)] = asyncio.run(throughput(url, body, headers, clients, seconds))
    tls = served_over_tls(work, cut, name, (body, headers), n, seconds)
    return {
        "model": name,
        "cut": cut,
        "tensor": manifest.cut(cut).tensor,
        "cut_bytes": manifest.cut(cut).bytes,
        "in_process_p50_ms": percentile_ms(baseline, 50),
        "in_process_p99_ms": percentile_ms(baseline, 99),
        "served_p50_ms": percentile_ms(path, 50),
        "served_p99_ms": percentile_ms(path, 99),
        "overhead_p50_ms": round(percentile_ms(path, 50) - percentile_ms(baseline, 50), 3),
        # The same client and body against an app that does nothing: one hop's floor.
        "one_hop_floor_p50_ms": percentile_ms(floor, 50),
        "served_peer_client_p50_ms": percentile_ms(peer_path, 50),
        "served_peer_client_p99_ms": percentile_ms(peer_path, 99),
        "overhead_peer_client_p50_ms": round(
            percentile_ms(peer_path, 50) - percentile_ms(baseline, 50), 3
        ),
        "json_request_bytes": len(json_body),
        "served_json_p50_ms": percentile_ms(json_path, 50),
        "served_json_p99_ms": percentile_ms(json_path, 99),
        "throughput_rps": rates,
        "beside_big_json": isolation,
        **tls,
        "tls_cost_p50_ms": round(tls["served_tls_p50_ms"] - percentile_ms(path, 50), 3),
    }


def served_over_tls(
    work: Path, cut: int, name: str, request: tuple[bytes, dict[str, str]], n: int, seconds: float
) -> dict[str, object]:
    """The same pipeline with mutual TLS between edge and cloud (``neukonfig.tls``), in
    the same run as the plain one, so that their difference is what TLS costs."""
    print(f"{name}: served over mutual TLS ...", file=sys.stderr, flush=True)
    certificates = Certificates.ensure(work / "certs")
    body, headers = request
    with loopback_stack(work / "parts", cut, name, work, certificates) as url:
        path = asyncio.run(served(url, body, headers, n))
        rates = {
            str(c): asyncio.run(throughput(url, body, headers, c, seconds)) for c in TLS_CONCURRENCY
        }
    return {
        "served_tls_p50_ms": percentile_ms(path, 50),
        "served_tls_p99_ms": percentile_ms(path, 99),
        "throughput_tls_rps": rates,
    }


def _rate_label(rate: float) -> str:
    return f"{rate:g}/s" if rate else "back to back"


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| model | cut | in-process p50/p99 ms | served (httpx) p50/p99 ms | overhead p50 ms "
        "| one-hop floor (httpx) p50 ms "
        "| served (PeerClient) p50/p99 ms | overhead p50 ms | req/s @1 | @4 | @16 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rates = r["throughput_rps"]
        lines.append(
            f"| {r['model']} | {r['cut']} | {r['in_process_p50_ms']} / {r['in_process_p99_ms']} "
            f"| {r['served_p50_ms']} / {r['served_p99_ms']} | {r['overhead_p50_ms']} "
            f"| {r['one_hop_floor_p50_ms']} "
            f"| {r['served_peer_client_p50_ms']} / {r['served_peer_client_p99_ms']} "
            f"| {r['overhead_peer_client_p50_ms']} "
            f"| {rates['1']} | {rates['4']} | {rates['16']} |"
        )
    lines += [
        "",
        "| model | served p50/p99 ms | over mutual TLS p50/p99 ms | TLS cost p50 ms "
        "| req/s @1 plain / TLS | @4 plain / TLS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rates, tls_rates = r["throughput_rps"], r["throughput_tls_rps"]
        lines.append(
            f"| {r['model']} | {r['served_p50_ms']} / {r['served_p99_ms']} "
            f"| {r['served_tls_p50_ms']} / {r['served_tls_p99_ms']} | {r['tls_cost_p50_ms']} "
            f"| {rates['1']} / {tls_rates['1']} | {rates['4']} / {tls_rates['4']} |"
        )
    lines += [
        "",
        "| model | JSON request bytes | served JSON p50/p99 ms | binary p50 ms | JSON/binary p50 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['json_request_bytes']} "
            f"| {r['served_json_p50_ms']} / {r['served_json_p99_ms']} | {r['served_p50_ms']} "
            f"| {r['served_json_p50_ms'] / r['served_p50_ms']:.2f} |"
        )
    for r in rows:
        for b in r["beside_big_json"] or []:
            lines.append(
                f"\n{r['model']}: small binary requests p50/p99 {b['small_alone_p50_ms']} / "
                f"{b['small_alone_p99_ms']} ms alone, {b['small_beside_p50_ms']} / "
                f"{b['small_beside_p99_ms']} ms beside JSON requests of {b['big_request_bytes']}"
                f" bytes ({_rate_label(b['big_rate_per_s'])}, {b['big_requests_answered']} "
                "answered): "
                f"p50 x{b['p50_ratio']}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/data_path.json")
    parser.add_argument("--models", default="tiny,mobilenetv2")
    parser.add_argument(
        "--requests", type=int, default=300, help="sequential requests per latency run"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix=f"neukonfig-datapath-{name}-") as work:
            rows.append(bench_model(name, Path(work), args.requests, args.seconds))
    report = {
        "benchmark": "data_path",
        "link": "loopback, no shaping",
        "machine": machine(),
        "versions": {"onnxruntime": onnxruntime.__version__, "httpx": httpx.__version__},
        "rows": rows,
    }
    out = write_json(args.out, report)
    print(table(rows))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
