"""Index an ONNX graph once, so cut finding and extraction are simple look-ups.

Modelled on ``onnx.utils.Extractor``: build name -> producer and name -> consumers
maps once, then answer questions from them. Two ideas matter for cutting:

* **Constant tensors** (initializers and everything computed only from them, such
  as the ``Constant`` nodes that PyTorch and Paddle exporters scatter everywhere)
  can be copied to both sides of a cut, so they never count as crossing it.
* **Dead nodes** (whose outputs reach no graph output) belong to neither side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import onnx

from neukonfig.errors import InvalidModelError, UnsupportedModelError

# Ops whose output differs between runs even with constant inputs: never fold them.
_NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
)


def subgraph_outer_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = list(attribute.graphs)
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        for graph in graphs:
            names |= _graph_free_names(graph)
    return names


def _graph_free_names(graph: onnx.GraphProto) -> set[str]:
    defined = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(name for name in node.input if name)
        used |= subgraph_outer_inputs(node)
        defined.update(node.output)
    used.update(value.name for value in graph.output)
    return used - defined


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit inputs (skipping omitted optionals) plus implicit subgraph inputs."""
    explicit = [name for name in node.input if name]
    implicit = sorted(subgraph_outer_inputs(node) - set(explicit))
    return explicit + implicit


@dataclass
class GraphIndex:
    """Read-only view of a model's main graph, in topological order, without dead nodes."""

    model: onnx.ModelProto
    inputs: list[str] = field(init=False)
    outputs: list[str] = field(init=False)
    initializers: set[str] = field(init=False)
    nodes: list[onnx.NodeProto] = field(init=False)
    producer: dict[str, int] = field(init=False)
    consumers: dict[str, list[int]] = field(init=False)
    constant: set[str] = field(init=False)
    value_info: dict[str, onnx.ValueInfoProto] = field(init=False)

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.initializers = {t.name for t in graph.initializer}
        self.initializers |= {t.values.name for t in graph.sparse_initializer}
        # Old exporters (IR < 4) also list initializers as graph inputs; those are not real inputs.
        self.inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs = [v.name for v in graph.output]
        self.nodes = _live_nodes(_topological_order(graph, self.inputs, self.initializers), self)
        self.producer = {name: i for i, node in enumerate(self.nodes) for name in node.output}
        self.consumers = {}
        for i, node in enumerate(self.nodes):
            for name in node_inputs(node):
                self.consumers.setdefault(name, []).append(i)
        self.constant = self._constant_tensors()
        self.value_info = {
            v.name: v for v in [*graph.input, *graph.value_info, *graph.output] if v.name
        }

    def _constant_tensors(self) -> set[str]:
        constant = set(self.initializers)
        for node in self.nodes:
            if node.op_type in _NONDETERMINISTIC_OPS:
                continue
            if all(name in constant for name in node_inputs(node)):
                constant.update(name for name in node.output if name)
        return constant

    def is_constant_node(self, index: int) -> bool:
        outputs = [name for name in self.nodes[index].output if name]
        return bool(outputs) and all(name in self.constant for name in outputs)

    def activation_order(self) -> list[int]:
        """Indices of the non-constant nodes, in topological order: the ones a cut divides."""
        return [i for i in range(len(self.nodes)) if not self.is_constant_node(i)]

    def activation_inputs(self, index: int) -> list[str]:
        """The non-constant tensors a node reads: the ones that matter for a cut."""
        return [name for name in node_inputs(self.nodes[index]) if name not in self.constant]

    def ancestors(self, tensors: Iterable[str]) -> set[int]:
        """Indices of every node that the given tensors depend on, constants included."""
        seen: set[int] = set()
        stack = [self.producer[name] for name in tensors if name in self.producer]
        while stack:
            index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            stack.extend(
                self.producer[name]
                for name in node_inputs(self.nodes[index])
                if name in self.producer
            )
        return seen

    def tensors(self) -> Iterator[str]:
        """Every tensor name that flows along an edge: graph inputs, then node outputs."""
        yield from self.inputs
        for node in self.nodes:
            yield from (name for name in node.output if name)


def _topological_order(
    graph: onnx.GraphProto, inputs: list[str], initializers: set[str]
) -> list[onnx.NodeProto]:
    """Kahn's algorithm, stable on the file's order; rejects cycles and unknown tensors."""
    available = set(inputs) | initializers
    produced_by: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.output:
            if name in produced_by or name in available:
                raise InvalidModelError(f"tensor {name!r} is produced more than once")
            if name:
                produced_by[name] = i
    missing = [
        name
        for node in graph.node
        for name in node_inputs(node)
        if name not in available and name not in produced_by
    ]
    if missing:
        raise InvalidModelError(f"tensor {missing[0]!r} is read but never produced")
    return _kahn(graph, produced_by)


def _kahn(graph: onnx.GraphProto, produced_by: dict[str, int]) -> list[onnx.NodeProto]:
    waiting = [0] * len(graph.node)
    dependants: dict[int, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in set(node_inputs(node)):
            if name in produced_by:
                waiting[i] += 1
                dependants.setdefault(produced_by[name], []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    ready.reverse()
    order: list[int] = []
    while ready:
        index = ready.pop()
        order.append(index)
        for dependant in reversed(dependants.get(index, [])):
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                ready.append(dependant)
    if len(order) != len(graph.node):
        raise InvalidModelError("the graph has a cycle")
    return [graph.node[i] for i in order]


def _live_nodes(nodes: list[onnx.NodeProto], index: GraphIndex) -> list[onnx.NodeProto]:
    """Drop nodes whose outputs reach no graph output (they belong to neither side)."""
    needed = set(index.outputs)
    live: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(name in needed for name in node.output):
            live.append(node)
            needed.update(node_inputs(node))
    missing_outputs = (
        needed
        & set(index.outputs)
        - {name for node in live for name in node.output}
        - set(index.inputs)
        - index.initializers
    )
    if missing_outputs:
        raise InvalidModelError(f"graph output {sorted(missing_outputs)[0]!r} is never produced")
    live.reverse()
    if not live:
        raise UnsupportedModelError("the graph has no nodes that produce its outputs")
    return live
