"""Write head and tail ONNX files for chosen cuts, plus ``manifest.json``.

The model is loaded and its weights written once (``weights.bin``); each head and
tail is a small graph file whose initializers point into that shared file. So
partitioning all N cuts costs one load and one copy of the weights, not N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import onnx

from models.cuts import CutPoint, find_cuts, select_cuts, tensor_type
from models.graph import GraphIndex, node_inputs
from models.onnx_io import WEIGHTS_FILE, LoadedModel, SizeOnly, load_model, write_weights
from neukonfig.errors import OutputDirConflictError, UnsupportedModelError
from neukonfig.files import atomic_file
from neukonfig.manifest import (
    MANIFEST_FILE,
    CutKind,
    CutSpec,
    Manifest,
    ModelSpec,
    TensorSpec,
    read_manifest,
    write_manifest,
)

FULL_MODEL_FILE = "full.onnx"

Progress = Callable[[str], None]


def partition_model(
    model_path: str | Path,
    out_dir: str | Path,
    *,
    cuts: str = "all",
    name: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Partition ``model_path`` at the cuts in ``cuts`` (``all`` or ``I,J,tensor``)."""
    report = progress or (lambda _message: None)
    out_dir = Path(out_dir)
    model = load_model(model_path)
    index = GraphIndex(model.proto)
    all_cuts = find_cuts(index)
    chosen = select_cuts(all_cuts, index, cuts)
    previous = _previous_manifest(out_dir, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    has_weights = bool(model.weights.names())
    report(f"writing shared weights to {out_dir / WEIGHTS_FILE}")
    _write_weights_and_full_model(model, out_dir, keep_existing=previous is not None)
    specs = {cut.index: cut for cut in previous.cuts} if previous else {}
    for number, cut in enumerate(chosen, start=1):
        report(f"[{number}/{len(chosen)}] cut {cut.index} ({cut.kind.value}) {cut.tensor or ''}")
        specs[cut.index] = _write_cut(index, cut, out_dir)
    manifest = Manifest(
        model=_model_spec(model, index, name),
        full=FULL_MODEL_FILE,
        weights=WEIGHTS_FILE if has_weights else None,
        num_cuts=len(all_cuts),
        cuts=[specs[number] for number in sorted(specs)],
    )
    write_manifest(out_dir, manifest)
    return manifest


def _previous_manifest(out_dir: Path, model: LoadedModel) -> Manifest | None:
    if not (out_dir / MANIFEST_FILE).is_file():
        return None
    previous = read_manifest(out_dir)
    if previous.model.sha256 != model.sha256:
        raise OutputDirConflictError(
            f"{out_dir} already holds partitions of a different model "
            f"({previous.model.name}, sha256 {previous.model.sha256[:12]}); "
            "choose another --out or remove it"
        )
    return previous


def _write_weights_and_full_model(
    model: LoadedModel, out_dir: Path, *, keep_existing: bool
) -> None:
    weights = out_dir / WEIGHTS_FILE
    if keep_existing and weights.is_file():
        # Same model (sha256) and the layout is deterministic: leave the file that running
        # heads have memory-mapped, or new heads would map a second copy of the weights.
        sink = SizeOnly()
        write_weights(model, sink)
        if sink.tell() == weights.stat().st_size:
            _save(model.proto, out_dir / FULL_MODEL_FILE)
            return
    # Replace by rename: a running service may have the old weights memory-mapped.
    with atomic_file(weights) as stream:
        write_weights(model, stream)
    _save(model.proto, out_dir / FULL_MODEL_FILE)


def _write_cut(index: GraphIndex, cut: CutPoint, out_dir: Path) -> CutSpec:
    head_file = tail_file = FULL_MODEL_FILE
    if cut.kind is CutKind.SPLIT:
        head_file, tail_file = cut_file_names(cut.index)
        _save(extract_head(index, cut), out_dir / head_file)
        _save(extract_tail(index, cut), out_dir / tail_file)
    return CutSpec(
        index=cut.index,
        kind=cut.kind,
        tensor=cut.tensor,
        shape=list(cut.shape) if cut.shape is not None else None,
        dtype=cut.dtype,
        bytes=cut.bytes,
        head=None if cut.kind is CutKind.ALL_CLOUD else head_file,
        tail=None if cut.kind is CutKind.ALL_EDGE else tail_file,
    )


def cut_file_names(number: int) -> tuple[str, str]:
    return f"cut{number:03d}.head.onnx", f"cut{number:03d}.tail.onnx"


def extract_head(index: GraphIndex, cut: CutPoint) -> onnx.ModelProto:
    """Graph input -> cut tensor: the cut's first ``boundary`` activation nodes."""
    nodes = index.activation_order()[: cut.boundary]
    graph_inputs = [_value_info(index, name) for name in index.inputs]
    return _submodel(index, nodes, graph_inputs, [_value_info(index, cut.tensor)], "head", cut)


def extract_tail(index: GraphIndex, cut: CutPoint) -> onnx.ModelProto:
    """Cut tensor -> graph outputs: every activation node after the boundary."""
    nodes = index.activation_order()[cut.boundary :]
    graph_outputs = [_value_info(index, name) for name in index.outputs]
    return _submodel(index, nodes, [_value_info(index, cut.tensor)], graph_outputs, "tail", cut)


def _submodel(
    index: GraphIndex,
    activation_nodes: list[int],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    role: str,
    cut: CutPoint,
) -> onnx.ModelProto:
    chosen = sorted(set(activation_nodes) | _constant_producers(index, activation_nodes))
    nodes = [index.nodes[i] for i in chosen]
    read = {name for node in nodes for name in node_inputs(node)}
    produced = {name for node in nodes for name in node.output}
    boundary = {v.name for v in inputs} | {v.name for v in outputs}
    source = index.model
    graph = onnx.helper.make_graph(
        nodes,
        f"{source.graph.name or 'model'}_{role}_{cut.index}",
        inputs,
        outputs,
        initializer=[t for t in source.graph.initializer if t.name in read],
        sparse_initializer=[t for t in source.graph.sparse_initializer if t.values.name in read],
        value_info=[info for name, info in index.value_info.items() if name in produced - boundary],
    )
    model = onnx.helper.make_model(
        graph,
        opset_imports=source.opset_import,
        ir_version=source.ir_version,
        producer_name="neukonfig",
        functions=source.functions,
    )
    tags = {
        "neukonfig.role": role,
        "neukonfig.cut": str(cut.index),
        "neukonfig.tensor": cut.tensor,
    }
    onnx.helper.set_model_props(model, {key: value or "" for key, value in tags.items()})
    return model


def _constant_producers(index: GraphIndex, nodes: Iterable[int]) -> set[int]:
    """Constant-only nodes that ``nodes`` need, transitively; each side gets its own copy."""
    needed: set[int] = set()
    stack = [
        index.producer[name]
        for i in nodes
        for name in node_inputs(index.nodes[i])
        if name in index.constant and name in index.producer
    ]
    while stack:
        producer = stack.pop()
        if producer not in needed:
            needed.add(producer)
            stack.extend(
                index.producer[name]
                for name in node_inputs(index.nodes[producer])
                if name in index.producer
            )
    return needed


def _value_info(index: GraphIndex, tensor: str | None) -> onnx.ValueInfoProto:
    assert tensor is not None
    _shape, dtype = tensor_type(index, tensor)
    if dtype is None:
        raise UnsupportedModelError(
            f"cannot infer the element type of tensor {tensor!r}, so it cannot cross a cut"
        )
    return index.value_info[tensor]


def _model_spec(model: LoadedModel, index: GraphIndex, name: str | None) -> ModelSpec:
    def spec(tensor: str) -> TensorSpec:
        shape, dtype = tensor_type(index, tensor)
        return TensorSpec(name=tensor, shape=list(shape) if shape else None, dtype=dtype)

    opset = next((o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelSpec(
        name=name or model.path.stem,
        sha256=model.sha256,
        opset=opset,
        inputs=[spec(t) for t in index.inputs],
        outputs=[spec(t) for t in index.outputs],
    )


def _save(model: onnx.ModelProto, path: Path) -> None:
    with atomic_file(path) as stream:
        stream.write(model.SerializeToString())
