"""Refuse graphs whose shapes or control flow depend on the input's values, not only on its shape.

A model whose every tensor shape follows from the input's shape has a cost fixed by the input size: what one
probe at that size measured holds for every image. A graph that computes a shape, a loop count or a branch from
the pixels can pass the probe and then, on a chosen image, allocate without bound or run for minutes.

Each tensor gets one of three origins, propagated through the graph (and into `If` branches):

    CONSTANT    initializers and `Constant` nodes, and what is computed from them alone
    SHAPE       follows from the input's shape: `Shape`, `Size`, `ConstantOfShape`, `EyeLike` and what is computed
                from those and constants (real exports build Reshape targets as Shape→Gather→Unsqueeze→Concat)
    VALUES      computed from the input's values (every other op passes on the latest origin of its inputs)

A node is refused (422 `data_dependent_shape`) where an input that sets its output's shape or its control flow
(`SHAPE_INPUTS`: Reshape's shape, Expand's shape, Tile's repeats, Resize's scales and sizes, Slice's bounds,
`If`'s condition, ...) comes from VALUES, where an op whose output size is its input's values (`NonZero`,
`Unique`, `Compress`, ...) reads VALUES, and wherever a `Loop` or `Scan` appears (their trip count and state are
the model's to choose, at run time). Nothing is run: this reads the graph only.
"""

from __future__ import annotations

import onnx

from models.validate import ModelRejected, default_opset

CONSTANT, SHAPE, VALUES = 0, 1, 2

# op → positions of the inputs whose values set the output's shape (or, for If, which branch runs).
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4), "Resize": (2, 3), "Upsample": (1,), "Pad": (1, 3), "Split": (1,), "Squeeze": (1,),
    "Unsqueeze": (1,), "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "ReduceProd": (1,), "TopK": (1,), "OneHot": (1,), "CenterCropPad": (1,), "MaxUnpool": (2,), "If": (0,),
}
WHAT = {"Reshape": "its target shape", "Expand": "its target shape", "Tile": "its repeats",
        "ConstantOfShape": "its shape", "Range": "its start, limit or delta", "Slice": "its bounds",
        "Resize": "its scales or sizes", "Upsample": "its scales", "Pad": "its pads", "Split": "its split sizes",
        "If": "its condition (which branch runs)", "TopK": "its k", "OneHot": "its depth"}
# ops whose output size is counted from their input's values
VALUE_SIZED = frozenset({"NonZero", "Unique", "Compress", "NonMaxSuppression", "StringSplit"})
# ops whose work is chosen at run time by the graph
LOOPS = frozenset({"Loop", "Scan"})
# ops whose output values follow from their input's shape alone
SHAPE_OF = frozenset({"Shape", "Size", "EyeLike"})


def check(model: onnx.ModelProto, image_name: str) -> dict[str, int]:
    """Raise `ModelRejected` (422 `data_dependent_shape`) unless every shape and branch of the graph follows from the
    image input's shape and the model's constants; returns each tensor's origin (of the main graph)."""
    origins = {t.name: CONSTANT for t in model.graph.initializer}
    origins.update({i.name: VALUES for i in model.graph.input if i.name not in origins})
    origins[image_name] = VALUES
    _graph(model.graph, origins, default_opset(model) or 0)
    return origins


def _graph(graph: onnx.GraphProto, origins: dict[str, int], opset: int, where: str = "") -> None:
    """Propagate origins through `graph`'s nodes (in their order, which ONNX requires to be topological), refusing
    the first node whose shape or control flow reads VALUES. `origins` holds the enclosing scopes' tensors."""
    for t in graph.initializer:
        origins[t.name] = CONSTANT
    for node in graph.node:
        origin = _node(node, origins, opset, where)
        for name in node.output:
            if name:
                origins[name] = origin


def _node(node: onnx.NodeProto, origins: dict[str, int], opset: int, where: str) -> int:
    """The origin of the node's outputs, after refusing it if its shape or control flow reads VALUES."""
    inputs = [origins.get(name, CONSTANT) if name else CONSTANT for name in node.input]
    label = f"node {node.name or node.output[0]!r} ({node.op_type}){where}"
    if node.op_type in LOOPS:
        raise _refused(node, f"{label} is a {node.op_type}: the graph decides at run time how often it runs; "
                       "convscope accepts graphs whose work is fixed by the input's size (export with the loop "
                       "unrolled, e.g. torch.onnx.export of a traced model)")
    if node.op_type in VALUE_SIZED and max(inputs, default=CONSTANT) == VALUES:
        raise _refused(node, f"{label} makes a tensor whose size is counted from the input's values; convscope "
                       "accepts graphs whose every shape follows from the input's shape alone")
    positions = SHAPE_INPUTS.get(node.op_type, ())
    if node.op_type == "Slice" and opset < 10 or node.op_type in ("Squeeze", "Unsqueeze", "Split") and opset < 13:
        positions = ()  # bounds and axes were attributes then
    for i in positions:
        if i < len(inputs) and inputs[i] == VALUES:
            what = WHAT.get(node.op_type, f"its input {i}")
            raise _refused(node, f"{label} takes {what} from tensor {node.input[i]!r}, which is computed from the "
                           "input's values: its output's size (or the work it does) would depend on the image "
                           "sent, not only on its size; convscope accepts graphs whose every shape follows from "
                           "the input's shape alone")
    if node.op_type in SHAPE_OF:
        return SHAPE
    if node.op_type == "ConstantOfShape":
        return max(inputs[0] if inputs else CONSTANT, SHAPE)
    if node.op_type == "Constant":
        return CONSTANT
    origin = max(inputs, default=CONSTANT)
    for attribute in node.attribute:  # If branches: what they read of the outer scope, and what they compute
        for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            scope = dict(origins)
            _graph(sub, scope, opset, f" in a branch of {label}")
            origin = max([origin] + [scope.get(o.name, CONSTANT) for o in sub.output])
    return origin


def _refused(node: onnx.NodeProto, message: str) -> ModelRejected:
    return ModelRejected("data_dependent_shape", message,
                         details={"node": node.name or node.output[0], "op": node.op_type})
