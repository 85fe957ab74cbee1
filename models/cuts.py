"""Find the valid single-tensor cut points of any ONNX DAG.

A tensor ``T`` is a valid cut when the nodes ``T`` depends on (the head) and all
other nodes (the tail) communicate through ``T`` alone; constants may sit on both
sides. If ``T`` is valid, every non-constant node is an ancestor or a descendant of
``T`` (otherwise some path from the graph input reaches the tail without passing
``T``). So in *any* topological order the head is exactly a prefix, and ``T`` is
the only non-constant tensor alive across that prefix boundary. One sweep over a
topological order therefore finds every cut in O(nodes + edges), with no search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from models.graph import GraphIndex
from neukonfig.errors import CutNotFoundError, InvalidCutError, UnsupportedModelError
from neukonfig.manifest import CutKind


@dataclass(frozen=True)
class CutPoint:
    """One place the model can be split. ``boundary`` counts the head's non-constant nodes."""

    index: int
    kind: CutKind
    tensor: str | None
    shape: tuple[int | str | None, ...] | None
    dtype: str | None
    bytes: int | None
    boundary: int

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "kind": self.kind.value,
            "tensor": self.tensor,
            "shape": list(self.shape) if self.shape is not None else None,
            "dtype": self.dtype,
            "bytes": self.bytes,
        }


def find_cuts(index: GraphIndex) -> list[CutPoint]:
    """Cut 0 (all-cloud), every valid internal tensor in topological order, then cut N."""
    _require_single_input(index)
    order = index.activation_order()
    alive_alone = _tensors_alone_at_each_boundary(index, order)
    outputs = set(index.outputs)
    cuts = [_cut(index, 0, CutKind.ALL_CLOUD, index.inputs[0], boundary=0)]
    for boundary, tensor in enumerate(alive_alone[1:-1], start=1):
        if tensor is not None and tensor not in outputs and tensor not in index.inputs:
            cuts.append(_cut(index, len(cuts), CutKind.SPLIT, tensor, boundary=boundary))
    cuts.append(
        CutPoint(len(cuts), CutKind.ALL_EDGE, None, None, None, bytes=0, boundary=len(order))
    )
    return cuts


def _require_single_input(index: GraphIndex) -> None:
    if len(index.inputs) != 1:
        raise UnsupportedModelError(
            f"the model has {len(index.inputs)} graph inputs ({', '.join(index.inputs)}); "
            "neukonfig splits single-input models only"
        )


def _tensors_alone_at_each_boundary(index: GraphIndex, order: list[int]) -> list[str | None]:
    """For each boundary b (b head nodes), the single non-constant tensor crossing it, if one.

    A tensor is alive across boundary b when it is produced before it (or is a graph
    input) and read after it (or is a graph output). Difference arrays of the count
    and of the sum of tensor ids give, for every boundary, how many cross and, when
    exactly one does, which one.
    """
    position = {node: p for p, node in enumerate(order)}
    last = len(order)
    count = np.zeros(last + 2, dtype=np.int64)
    id_sum = np.zeros(last + 2, dtype=np.int64)
    names: list[str] = []
    for name in index.tensors():
        if name in index.constant:
            continue
        born = position[index.producer[name]] + 1 if name in index.producer else 0
        readers = [position[c] for c in index.consumers.get(name, [])]
        dies = last + 1 if name in index.outputs else max(readers, default=born - 1) + 1
        if dies <= born:
            continue
        names.append(name)
        count[born] += 1
        count[dies] -= 1
        id_sum[born] += len(names)
        id_sum[dies] -= len(names)
    count = np.cumsum(count)[: last + 1]
    id_sum = np.cumsum(id_sum)[: last + 1]
    return [names[int(s) - 1] if c == 1 else None for c, s in zip(count, id_sum, strict=True)]


def _cut(index: GraphIndex, number: int, kind: CutKind, tensor: str, *, boundary: int) -> CutPoint:
    shape, dtype = tensor_type(index, tensor)
    return CutPoint(number, kind, tensor, shape, dtype, batch1_bytes(shape, dtype), boundary)


def tensor_type(
    index: GraphIndex, tensor: str
) -> tuple[tuple[int | str | None, ...] | None, str | None]:
    """Shape (ints, symbolic names, None for unknown) and numpy dtype name, where inferred."""
    info = index.value_info.get(tensor)
    if info is None or not info.type.HasField("tensor_type"):
        return None, None
    tensor_type_ = info.type.tensor_type
    dtype = (
        onnx.helper.tensor_dtype_to_np_dtype(tensor_type_.elem_type).name
        if tensor_type_.elem_type
        else None
    )
    if not tensor_type_.HasField("shape"):
        return None, dtype
    shape = tuple(
        dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
        for dim in tensor_type_.shape.dim
    )
    return shape, dtype


def batch1_bytes(shape: tuple[int | str | None, ...] | None, dtype: str | None) -> int | None:
    """Size at batch 1: a symbolic leading dimension counts as 1, any other unknown gives None."""
    if shape is None or dtype is None:
        return None
    elements = 1
    for position, dim in enumerate(shape):
        if isinstance(dim, int):
            elements *= dim
        elif position != 0:
            return None
    return elements * np.dtype(dtype).itemsize


def select_cuts(cuts: list[CutPoint], index: GraphIndex, spec: str) -> list[CutPoint]:
    """Resolve ``all`` or a comma list of cut indices and tensor names, explaining bad ones."""
    if spec.strip() == "all":
        return list(cuts)
    by_tensor = {cut.tensor: cut for cut in cuts if cut.tensor is not None}
    chosen: dict[int, CutPoint] = {}
    for token in (part.strip() for part in spec.split(",")):
        if not token:
            raise CutNotFoundError(f"empty entry in cut list {spec!r}")
        if token.lstrip("-").isdigit():
            number = int(token)
            if not 0 <= number < len(cuts):
                raise CutNotFoundError(
                    f"cut index {number} does not exist; valid indices are 0..{len(cuts) - 1}"
                )
            chosen[number] = cuts[number]
        elif token in by_tensor:
            chosen[by_tensor[token].index] = by_tensor[token]
        else:
            raise_invalid_tensor(index, token)
    return [chosen[number] for number in sorted(chosen)]


def raise_invalid_tensor(index: GraphIndex, tensor: str) -> None:
    """Raise the most specific error for a tensor name that is not a valid cut."""
    if tensor not in index.producer and tensor not in index.inputs:
        if tensor in index.initializers:
            raise InvalidCutError(f"{tensor!r} is an initializer (a weight), not an activation")
        raise CutNotFoundError(f"tensor {tensor!r} does not exist in the model's graph")
    raise InvalidCutError(f"tensor {tensor!r} is not a valid cut: {why_not_a_cut(index, tensor)}")


def why_not_a_cut(index: GraphIndex, tensor: str) -> str:
    """The first edge (other than ``tensor``) that crosses from its head to the rest."""
    if tensor in index.constant:
        return "it is computed from constants only, so it carries no activation"
    if tensor in index.outputs:
        return "it is a graph output; use the all-edge cut instead"
    head = index.ancestors([tensor])
    for name in [*index.inputs, *(o for i in sorted(head) for o in index.nodes[i].output)]:
        if name == tensor or name in index.constant:
            continue
        if name in index.outputs:
            return f"graph output {name!r} is computed before it"
        outside = [c for c in index.consumers.get(name, []) if c not in head]
        if outside:
            producer = index.nodes[index.producer[name]].name if name in index.producer else None
            source = f"node {producer!r}" if producer else "the graph input"
            reader = index.nodes[outside[0]].name or index.nodes[outside[0]].op_type
            return (
                f"{name!r} (from {source}) is also read after it by node {reader!r}; "
                "a skip connection or parallel branch crosses this point"
            )
    return "another tensor crosses this point"
