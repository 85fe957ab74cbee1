"""A slow, obviously-correct cut finder, straight from DESIGN.md's definition.

For each tensor T: head = every node T depends on; T is a valid cut iff no node
outside the head reads a non-constant tensor from inside the head other than T,
the graph input is read only inside the head, and no graph output is computed in
the head. Independent of models.cuts (no topological sweep).
"""

from __future__ import annotations

import onnx


def brute_force_cuts(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in initializers]
    outputs = {v.name for v in graph.output}
    producer = {name: node for node in graph.node for name in node.output}
    live = _live(graph, outputs, producer)
    constant = _constants(graph, initializers)

    def ancestors(tensor: str) -> set[int]:
        seen: set[int] = set()
        stack = [tensor]
        while stack:
            name = stack.pop()
            node = producer.get(name)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend(i for i in node.input if i)
        return seen

    valid = []
    for node in graph.node:
        if id(node) not in live:
            continue
        for tensor in node.output:
            if not tensor or tensor in constant or tensor in outputs:
                continue
            head = ancestors(tensor)
            if _only_tensor_crosses(graph, live, head, tensor, constant, inputs, outputs):
                valid.append(tensor)
    return valid


def _only_tensor_crosses(graph, live, head, tensor, constant, inputs, outputs) -> bool:
    head_tensors = set(inputs) | {
        o for node in graph.node if id(node) in head for o in node.output if o
    }
    if head_tensors & outputs:
        return False
    for node in graph.node:
        if id(node) in head or id(node) not in live:
            continue
        for name in node.input:
            if name and name != tensor and name in head_tensors and name not in constant:
                return False
    return True


def _live(graph, outputs, producer) -> set[int]:
    live: set[int] = set()
    stack = list(outputs)
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in live:
            live.add(id(node))
            stack.extend(i for i in node.input if i)
    return live


def _constants(graph, initializers) -> set[str]:
    constant = set(initializers)
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if all(i in constant for i in node.input if i) and not set(node.output) <= constant:
                if node.op_type.startswith("Random"):
                    continue
                constant.update(o for o in node.output if o)
                changed = True
    return constant
