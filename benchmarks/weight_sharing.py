"""Memory cost of running several edge heads at once, and which onnxruntime settings share it.

The partitioner writes every cut's head as a small graph file whose big initializers point
(page-aligned) into one shared ``weights.bin``. An edge that keeps standby pipelines runs
several heads of the same model at once. This measures, for k heads of different cuts:

- total proportional set size (PSS: shared pages are split between the processes that map
  them, so summing PSS counts every page once), RSS for reference, and how much of the
  PSS is ``weights.bin`` mapped from the page cache;
- per-head latency (median of ``--runs`` runs at batch 1, one thread) and session
  creation time, so the memory saving can be weighed against speed and start-up.

Each configuration runs in fresh worker processes (this file with ``--worker``), so no
measurement inherits another's memory. Heads are started one after another, then all are
measured while alive, then timed one at a time.

    python benchmarks/weight_sharing.py --models mobilenetv2,vgg16 --heads 1,2,4 \
        --out results/weight_sharing.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import psutil

from models.optimized import find_store, optimize_partitions
from models.runtime import session_options
from neukonfig.manifest import CutKind, read_manifest
from testbed.report import write_json

MODELS = ("mobilenetv2", "vgg16")
WEIGHTS = "weights.bin"
MB = 2**20


@dataclass(frozen=True)
class Config:
    """One way of hosting k heads on the edge."""

    key: str
    description: str
    # "per_head": one process per head (as separate edge services); "one": all in one.
    processes: str
    # "file": onnxruntime reads weights.bin itself; "ortvalues": one OrtValue per
    # initializer over an np.memmap of weights.bin, passed to every session with
    # add_initializer; "filebuffer": the whole memmap given to every session with
    # add_external_initializers_from_files_in_memory.
    weights: str = "file"
    entries: dict[str, str] = field(default_factory=dict)
    level: str | None = None  # GraphOptimizationLevel name; None keeps the default (ALL)
    # models.runtime.session_options(share_weights=True): session.disable_prepacking=1.
    share_weights: bool = False
    # One CPU arena registered in the onnxruntime environment and used by every session
    # of the process (session.use_env_allocators), instead of one arena per session.
    env_arena: bool = False
    # Heads from this machine's store of optimized partitions (models.optimized), loaded
    # with optimizations off: rewritten (NCHWc, fused) weights mapped, not copied.
    optimized: bool = False


CONFIGS = (
    Config("A", "process per head, default options", "per_head"),
    Config("B", "process per head, disable_prepacking", "per_head", share_weights=True),
    Config(
        "B-dev",
        "process per head, disable_prepacking, use_device_allocator_for_initializers",
        "per_head",
        share_weights=True,
        entries={"session.use_device_allocator_for_initializers": "1"},
    ),
    Config(
        "B-ext",
        "process per head, disable_prepacking, ORT_ENABLE_EXTENDED (no NCHWc layout)",
        "per_head",
        share_weights=True,
        level="ORT_ENABLE_EXTENDED",
    ),
    Config("A1", "one process, sessions from files, default options", "one"),
    Config("C", "one process, shared OrtValues (add_initializer)", "one", weights="ortvalues"),
    Config(
        "D",
        "one process, shared OrtValues, disable_prepacking",
        "one",
        weights="ortvalues",
        share_weights=True,
    ),
    Config(
        "E",
        "one process, sessions from files, disable_prepacking",
        "one",
        share_weights=True,
    ),
    Config(
        "F",
        "one process, weights.bin buffer used directly, disable_prepacking",
        "one",
        weights="filebuffer",
        share_weights=True,
        entries={"session.use_external_initializer_file_buffers_directly": "1"},
    ),
    Config(
        "G",
        "one process, sessions from files, disable_prepacking, one shared arena",
        "one",
        share_weights=True,
        entries={"session.use_env_allocators": "1"},
        env_arena=True,
    ),
    Config(
        "H",
        "one process, optimized store, disable_prepacking, one shared arena",
        "one",
        share_weights=True,
        entries={"session.use_env_allocators": "1"},
        env_arena=True,
        optimized=True,
    ),
)

# Session options compared head to head for speed (sessions read weights.bin themselves).
LATENCY_CONFIGS = tuple(c for c in CONFIGS if c.key in ("A", "B", "B-ext", "H"))


# --------------------------------------------------------------------------- worker


def _worker(spec: dict[str, Any]) -> None:
    """Load heads, warm each up once, report; then answer ``bench`` / ``quit`` on stdin.

    ``spec["heads"]`` lists (cut, config) pairs; a pair's sessions share OrtValues when
    their config says so. ``bench`` times each head ``runs`` times in turn, or, with
    ``interleave``, round-robin, so that background load hits every head alike.
    """
    directory = Path(spec["directory"])
    manifest = read_manifest(directory)
    weights = np.memmap(directory / WEIGHTS, dtype=np.uint8, mode="r")
    shared: dict[str, ort.OrtValue] = {}
    configs = [(cut, Config(**fields)) for cut, fields in spec["heads"]]
    if any(config.env_arena for _cut, config in configs):
        cpu = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))
    heads = []
    for cut, config in configs:
        path = directory / manifest.cut(cut).head  # type: ignore[operator]
        if config.optimized:
            store = find_store(directory)
            assert store is not None, "made by bench_model"
            path = store.path / path.name
        started = time.perf_counter()
        options = _options(config, path, weights, shared)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        created = time.perf_counter() - started
        feeds = {
            i.name: np.random.default_rng(0).standard_normal([1, *i.shape[1:]]).astype(np.float32)
            for i in session.get_inputs()
        }
        started = time.perf_counter()
        outputs = session.run(None, feeds)
        first = time.perf_counter() - started
        l2 = float(np.sqrt(sum(float(np.square(o.astype(np.float64)).sum()) for o in outputs)))
        heads.append((session, feeds))
        _say("HEAD", {"cut": cut, "create_s": created, "first_run_s": first, "output_l2": l2})
    _say("READY", {"pid": os.getpid()})
    for line in sys.stdin:
        if line.strip() != "bench":
            return
        times: list[list[float]] = [[] for _ in heads]
        if spec["interleave"]:
            order = [i for _ in range(spec["runs"]) for i in range(len(heads))]
        else:
            order = [i for i in range(len(heads)) for _ in range(spec["runs"])]
        for i in order:
            session, feeds = heads[i]
            started = time.perf_counter()
            session.run(None, feeds)
            times[i].append(time.perf_counter() - started)
        for series in times:
            _say(
                "BENCH",
                {"median_ms": statistics.median(series) * 1000, "min_ms": min(series) * 1000},
            )
        _say("DONE", {})


def _options(
    config: Config, path: Path, weights: np.memmap, shared: dict[str, ort.OrtValue]
) -> ort.SessionOptions:
    options = session_options(
        threads=1, share_weights=config.share_weights, optimized=config.optimized
    )
    if config.level:
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, config.level)
    for key, value in config.entries.items():
        options.add_session_config_entry(key, value)
    if config.weights == "ortvalues":
        for name, (offset, length, dtype, dims) in _external_initializers(path).items():
            if name not in shared:
                array = weights[offset : offset + length].view(dtype).reshape(dims)
                shared[name] = ort.OrtValue.ortvalue_from_numpy(array)
            options.add_initializer(name, shared[name])
    elif config.weights == "filebuffer":
        options.add_external_initializers_from_files_in_memory([WEIGHTS], [weights], [len(weights)])
    return options


def _external_initializers(path: Path) -> dict[str, tuple[int, int, np.dtype, tuple[int, ...]]]:
    """name -> (offset, length, dtype, dims) of every initializer stored in weights.bin."""
    model = onnx.load(str(path), load_external_data=False)
    found = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        found[tensor.name] = (
            int(entries["offset"]),
            int(entries["length"]),
            dtype,
            tuple(tensor.dims),
        )
    return found


def _say(tag: str, body: dict[str, Any]) -> None:
    print(tag, json.dumps(body), flush=True)


# --------------------------------------------------------------------------- parent


class Worker:
    """One worker process holding ``heads`` (cut, config) sessions."""

    def __init__(
        self,
        directory: Path,
        heads: list[tuple[int, Config]],
        runs: int,
        *,
        interleave: bool = False,
    ) -> None:
        spec = {
            "directory": str(directory),
            "heads": [(cut, asdict(config)) for cut, config in heads],
            "runs": runs,
            "interleave": interleave,
        }
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.heads = [msg for tag, msg in self._until("READY") if tag == "HEAD"]

    def _until(self, last: str) -> list[tuple[str, dict[str, Any]]]:
        assert self.process.stdout is not None
        seen = []
        for line in self.process.stdout:
            tag, _, body = line.partition(" ")
            seen.append((tag, json.loads(body)))
            if tag == last:
                return seen
        raise RuntimeError(f"worker exited with {self.process.wait()} before {last}")

    def bench(self) -> list[dict[str, Any]]:
        assert self.process.stdin is not None
        self.process.stdin.write("bench\n")
        self.process.stdin.flush()
        return [msg for tag, msg in self._until("DONE") if tag == "BENCH"]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def memory(pids: list[int]) -> dict[str, float]:
    """Summed PSS/RSS/USS, and the part of PSS that is weights.bin or anonymous memory."""
    total = {"pss": 0, "rss": 0, "uss": 0, "weights_pss": 0, "weights_rss": 0, "anon": 0}
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        total["pss"] += info.pss
        total["rss"] += info.rss
        total["uss"] += info.uss
        mapping = ""
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    parts = line.split(maxsplit=5)
                    mapping = parts[5].strip() if len(parts) > 5 else ""
                    continue
                key, _, value = line.partition(":")
                kib = int(value.split()[0]) * 1024 if value.strip().endswith("kB") else 0
                if key == "Anonymous":
                    total["anon"] += kib
                if Path(mapping.removesuffix(" (deleted)")).name == WEIGHTS:
                    if key == "Pss":
                        total["weights_pss"] += kib
                    elif key == "Rss":
                        total["weights_rss"] += kib
    return {f"total_{key}_mb": round(value / MB, 1) for key, value in total.items()}


def run_config(directory: Path, cuts: list[int], config: Config, runs: int) -> dict[str, Any]:
    groups = [[cut] for cut in cuts] if config.processes == "per_head" else [cuts]
    workers: list[Worker] = []
    try:
        for group in groups:  # one after another: creation times are not contended
            workers.append(Worker(directory, [(cut, config) for cut in group], runs))
        pids = [worker.process.pid for worker in workers]
        row: dict[str, Any] = {"processes": len(pids), **memory(pids)}
        benches = [bench for worker in workers for bench in worker.bench()]
        # Onnxruntime plans memory patterns from the first run, so steady state differs.
        after = memory(pids)
        row["total_pss_after_runs_mb"] = after["total_pss_mb"]
        row["total_anon_after_runs_mb"] = after["total_anon_mb"]
    finally:
        for worker in workers:
            worker.close()
    heads = [head for worker in workers for head in worker.heads]
    row["heads"] = [
        {
            "cut": head["cut"],
            "create_s": round(head["create_s"], 3),
            "first_run_s": round(head["first_run_s"], 3),
            "median_ms": round(bench["median_ms"], 2),
            "min_ms": round(bench["min_ms"], 2),
            "output_l2": head["output_l2"],
        }
        for head, bench in zip(heads, benches, strict=True)
    ]
    return row


def floor_memory(directory: Path) -> dict[str, float]:
    """A worker that imports what every worker imports but loads no head: per-process floor."""
    worker = Worker(directory, [], 1)
    try:
        return memory([worker.process.pid])
    finally:
        worker.close()


def head_weights(directory: Path, cuts: list[int]) -> dict[int, dict[str, int]]:
    """cut -> {initializer name: bytes in weights.bin} for the head of each cut."""
    manifest = read_manifest(directory)
    return {
        cut: {
            name: length
            for name, (_offset, length, _dtype, _dims) in _external_initializers(
                directory / manifest.cut(cut).head  # type: ignore[operator]
            ).items()
        }
        for cut in cuts
    }


def pick_cuts(directory: Path, count: int) -> list[int]:
    """The latest split cuts whose heads hold different sets of weights (heavy heads first)."""
    manifest = read_manifest(directory)
    splits = sorted((cut.index for cut in manifest.cuts if cut.kind is CutKind.SPLIT), reverse=True)
    chosen: list[int] = []
    seen: set[frozenset[str]] = set()
    for cut, names in head_weights(directory, splits).items():
        key = frozenset(names)
        if key not in seen:
            seen.add(key)
            chosen.append(cut)
        if len(chosen) == count:
            break
    return chosen


def prepare(model: str, work: Path) -> Path:
    """Build and partition ``model`` into ``work/model`` unless that is already there."""
    directory = work / model
    if (directory / "manifest.json").is_file():
        return directory
    onnx_path = work / f"{model}.onnx"
    print(f"building and partitioning {model} ...", file=sys.stderr, flush=True)
    cli = [sys.executable, "-m", "neukonfig"]
    subprocess.run([*cli, "zoo", "build", model, "--out", str(onnx_path)], check=True)
    subprocess.run(
        [*cli, "partition", str(onnx_path), "--out", str(directory)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    onnx_path.unlink()
    return directory


def bench_model(
    model: str,
    work: Path,
    ks: list[int],
    configs: list[Config],
    runs: int,
    repeat: int,
    cuts: list[int] | None,
) -> list[dict[str, Any]]:
    directory = prepare(model, work)
    if any(config.optimized for config in configs):
        optimize_partitions(directory, lambda line: print(line, file=sys.stderr, flush=True))
    order = cuts or pick_cuts(directory, max(ks))
    weights = head_weights(directory, order)
    rows = []
    for k in ks:
        chosen = order[:k]
        union: dict[str, int] = {}
        for cut in chosen:
            union.update(weights[cut])
        for config in configs:
            print(f"  {model} k={k} {config.key} cuts={chosen}", file=sys.stderr, flush=True)
            # Allocator noise moves a process's anonymous memory by up to ~40 MB (rarely
            # ~100 MB) between runs, so measure each configuration ``repeat`` times and
            # keep the median.
            trials = sorted(
                (run_config(directory, chosen, config, runs) for _ in range(repeat)),
                key=lambda trial: trial["total_pss_mb"],
            )
            row = {
                "model": model,
                "k": k,
                "config": config.key,
                "description": config.description,
                "cuts": chosen,
                "head_weights_mb": [round(sum(weights[cut].values()) / MB, 1) for cut in chosen],
                "unique_weights_mb": round(sum(union.values()) / MB, 1),
                **trials[len(trials) // 2],
                "total_pss_repeats_mb": [trial["total_pss_mb"] for trial in trials],
            }
            rows.append(row)
    _check_outputs(rows)
    return rows


def _check_outputs(rows: list[dict[str, Any]]) -> None:
    """Every configuration must compute what the default one does (within rounding)."""
    reference = {h["cut"]: h["output_l2"] for r in rows if r["config"] == "A" for h in r["heads"]}
    for row in rows:
        diffs = [
            abs(h["output_l2"] - reference[h["cut"]]) / max(abs(reference[h["cut"]]), 1e-12)
            for h in row["heads"]
            if h["cut"] in reference
        ]
        row["max_rel_l2_diff_vs_A"] = max(diffs) if diffs else None


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | k | config | cuts | procs | PSS MB | RSS MB | weights.bin PSS MB "
        "| anon MB | median ms/head | create s/head |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        median = " ".join(f"{h['median_ms']:.1f}" for h in row["heads"])
        create = " ".join(f"{h['create_s']:.2f}" for h in row["heads"])
        cuts = ",".join(str(cut) for cut in row["cuts"])
        lines.append(
            f"| {row['model']} | {row['k']} | {row['config']} | {cuts} | {row['processes']} "
            f"| {row['total_pss_mb']:.0f} | {row['total_rss_mb']:.0f} "
            f"| {row['total_weights_pss_mb']:.0f} | {row['total_anon_mb']:.0f} "
            f"| {median} | {create} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    """Per model and config: total PSS at each k, and what each added head cost."""
    ks = sorted({row["k"] for row in rows})
    steps = list(itertools.pairwise(ks))
    header = [
        "model",
        "config",
        *(f"PSS k={k}" for k in ks),
        f"PSS k={ks[-1]} after runs",
        *(f"MB/head k={a}→{b}" for a, b in steps),
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    keyed = {(row["model"], row["config"], row["k"]): row for row in rows}
    for model in dict.fromkeys(row["model"] for row in rows):
        for config in dict.fromkeys(row["config"] for row in rows):
            if not all((model, config, k) in keyed for k in ks):
                continue
            pss = {k: keyed[(model, config, k)]["total_pss_mb"] for k in ks}
            cells = [
                model,
                config,
                *(f"{pss[k]:.0f}" for k in ks),
                f"{keyed[(model, config, ks[-1])]['total_pss_after_runs_mb']:.0f}",
                *(f"{(pss[b] - pss[a]) / (b - a):.0f}" for a, b in steps),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_latency(directory: Path, cut: int, configs: list[Config], runs: int) -> dict[str, Any]:
    """One head under several configs in one process, timed round-robin (fair under noise)."""
    worker = Worker(directory, [(cut, config) for config in configs], runs, interleave=True)
    try:
        benches = worker.bench()
    finally:
        worker.close()
    return {
        "cut": cut,
        "runs": runs,
        "configs": {
            config.key: {
                "median_ms": round(bench["median_ms"], 2),
                "min_ms": round(bench["min_ms"], 2),
                "create_s": round(head["create_s"], 3),
                "first_run_s": round(head["first_run_s"], 3),
            }
            for config, head, bench in zip(configs, worker.heads, benches, strict=True)
        },
    }


def latency_table(paired: dict[str, dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(key for entry in paired.values() for key in entry["configs"]))
    lines = [
        "| model | cut | " + " | ".join(f"{key} median (min) ms" for key in keys) + " |",
        "|---|---:|" + "---:|" * len(keys),
    ]
    for model, entry in paired.items():
        cells = [
            f"{entry['configs'][key]['median_ms']:.1f} ({entry['configs'][key]['min_ms']:.1f})"
            for key in keys
        ]
        lines.append(f"| {model} | {entry['cut']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of zoo models")
    parser.add_argument("--heads", default="1,2,4", help="comma list of head counts k")
    parser.add_argument(
        "--configs", default=",".join(c.key for c in CONFIGS), help="comma list of configs"
    )
    parser.add_argument("--runs", type=int, default=20, help="timed runs per head")
    parser.add_argument(
        "--repeat", type=int, default=3, help="measure each configuration N times, keep median"
    )
    parser.add_argument(
        "--paired-runs",
        type=int,
        default=40,
        help="round-robin runs per config in the paired latency check (0: skip it)",
    )
    parser.add_argument(
        "--cuts",
        action="append",
        default=[],
        metavar="MODEL=I,J,...",
        help="heads to use, heaviest first (default: latest cuts with distinct weights)",
    )
    parser.add_argument("--work", help="keep partitions here and reuse them (default: temp)")
    parser.add_argument("--out", default="results/weight_sharing.json", help="JSON output")
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return
    ks = [int(k) for k in args.heads.split(",")]
    wanted = args.configs.split(",")
    configs = [c for c in CONFIGS if c.key in wanted]
    overrides = {
        model: [int(c) for c in cuts.split(",")]
        for model, _, cuts in (item.partition("=") for item in args.cuts)
    }
    rows: list[dict[str, Any]] = []
    floors: dict[str, dict[str, float]] = {}
    paired: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="neukonfig-weight-sharing-") as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        for model in args.models.split(","):
            rows += bench_model(
                model, work, ks, configs, args.runs, args.repeat, overrides.get(model)
            )
            floors[model] = floor_memory(work / model)
            if args.paired_runs:
                print(f"  {model} paired latency", file=sys.stderr, flush=True)
                heaviest = rows[-1]["cuts"][0]
                paired[model] = paired_latency(
                    work / model, heaviest, list(LATENCY_CONFIGS), args.paired_runs
                )
    report = {
        "benchmark": "weight_sharing",
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": len(os.sched_getaffinity(0)),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": sys.version.split()[0],
        },
        "versions": {
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },
        "configs": {c.key: asdict(c) for c in configs},
        "process_floor": floors,
        "rows": rows,
        "paired_latency": paired,
    }
    out = write_json(args.out, report)
    print(table(rows))
    print()
    print(summary(rows))
    if paired:
        print()
        print(latency_table(paired))
    print(f"\nper-process floor (python + onnxruntime, no head): {floors}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
