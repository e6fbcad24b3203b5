"""What one image costs a model, from the shapes of its tensors: FLOPs and bytes of activations.

The shapes come from ONNX shape inference (`onnx.shape_inference`, with data propagation) at the model's input
size with a batch of one, on a copy of the graph without its large weights. Real exports compute Reshape targets
and Resize sizes from the input's shape (Shape→Gather→Unsqueeze→Concat→Reshape, Shape→Slice→Cast→Mul→Floor);
where inference leaves such a value open, it is folded here: every node whose origin is the input's shape or
constants (`models.data_dependence`) and whose inputs are known and small is evaluated on its own
(`onnx.reference`), its outputs become constants, and inference runs again, until nothing more folds.

Counted per image (batch one):
    macs              multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul (what papers call the
                      "FLOPs" of a CNN: ResNet-50 3.9 G, EfficientNet-B0 0.39 G)
    flops             2 × macs, plus one operation per output element of every other node (a pooling window's
                      elements for MaxPool/AveragePool, the input's for global pools): floating-point operations
    activation_bytes  bytes of every node output, weights (Constant nodes) excepted: what a session that keeps
                      every tensor (the probe, the layer views' fallback) holds; a plain run reuses buffers, so
                      this is an upper bound of its memory
Tensors whose shape stays unknown (`Cost.unknown`) are not counted; `models.analysis` takes their shapes from
the probe run instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from models.data_dependence import VALUES
from models.validate import ImageInput, Limits, ModelRejected, default_opset

log = logging.getLogger(__name__)
FOLD_ELEMENTS = 4096  # largest tensor folded into a constant (shape arithmetic is a few numbers)
ROUNDS = 16  # inference and folding alternate at most this often (each round folds a whole chain)
FOLDABLE = frozenset({
    "Shape", "Size", "Constant", "Identity", "Cast", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Reshape",
    "Flatten", "Transpose", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Floor", "Ceil", "Sqrt", "Pow", "Min",
    "Max", "Clip", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Where",
    "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "ConstantOfShape", "Range", "Expand", "Tile", "Split",
})
MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

Shapes = dict[str, tuple[list[int] | None, int]]  # tensor → (dims, or None where unknown; ONNX element type)


@dataclass(frozen=True)
class Cost:
    """Per-image cost at one input size: operations and bytes (see the module docstring)."""

    flops: int
    macs: int
    activation_bytes: int
    unknown: tuple[str, ...] = field(default=())

    def record(self) -> dict:
        return {"flops": self.flops, "macs": self.macs, "activation_bytes": self.activation_bytes}


def shapes_at(model: onnx.ModelProto, image: ImageInput, size: tuple[int, int], origins: dict[str, int]) -> Shapes:
    """Every tensor's shape for one image of `size` (H, W) pixels: inferred, with shape arithmetic folded."""
    light, known = _light_copy(model, image, size)
    opset = default_opset(model) or 13
    shapes: Shapes = {}
    for _ in range(ROUNDS):
        shapes = _infer(light)
        folded = _fold(light, shapes, known, origins, opset)
        if not folded:
            break
        known.update(folded)
        _as_constants(light, folded)
    return shapes


def count(model: onnx.ModelProto, shapes: Shapes) -> Cost:
    """Per-image FLOPs, MACs and activation bytes of the main graph's nodes, from `shapes`."""
    macs = other = nbytes = 0
    unknown = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        outs = [shapes.get(name, (None, 0)) for name in node.output if name]
        if any(dims is None for dims, _ in outs):
            unknown.extend(name for name in node.output if name and shapes.get(name, (None, 0))[0] is None)
            continue
        nbytes += sum(_elements(dims) * _itemsize(kind) for dims, kind in outs)
        out = _elements(outs[0][0]) if outs else 0
        if node.op_type in MAC_OPS:
            macs += _macs(node, shapes, out)
        elif node.op_type in ("MaxPool", "AveragePool", "LpPool"):
            kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [1])
            other += out * math.prod(kernel)
        elif node.op_type.startswith("Global"):
            other += _elements(shapes.get(node.input[0], (None, 0))[0] or [])
        else:
            other += out
    return Cost(flops=2 * macs + other, macs=macs, activation_bytes=nbytes, unknown=tuple(unknown))


def probe_shapes(values: dict[str, np.ndarray], rows: int, names: list[str] | tuple[str, ...]) -> Shapes:
    """Shapes of `names` as the probe run found them, per image: a leading axis of `rows` (the probe's batch)
    becomes 1."""
    found: Shapes = {}
    for name in names:
        value = values.get(name)
        if value is None:
            continue
        dims = list(value.shape)
        if rows > 1 and dims and dims[0] == rows:
            dims[0] = 1
        found[name] = (dims, helper.np_dtype_to_tensor_dtype(value.dtype))
    return found


def check_limits(cost: Cost, limits: Limits, size: tuple[int, int]) -> None:
    """Refuse (422 `model_too_expensive`) a model whose image costs more than the limits allow."""
    at = f"an image of {size[0]}×{size[1]} pixels"
    if cost.flops > limits.max_flops:
        raise ModelRejected("model_too_expensive", f"the model needs {cost.flops / 1e9:.3g} GFLOPs for {at}; "
                            f"the limit is {limits.max_flops / 1e9:.3g} GFLOPs an image",
                            details={**cost.record(), "limit_flops": limits.max_flops, "size": list(size)})
    if cost.activation_bytes > limits.max_activation_bytes:
        raise ModelRejected("model_too_expensive", f"the model's tensors hold {cost.activation_bytes / 2**20:.0f} "
                            f"MiB for {at}; the limit is {limits.max_activation_bytes / 2**20:.0f} MiB an image",
                            details={**cost.record(), "limit_activation_bytes": limits.max_activation_bytes,
                                     "size": list(size)})


def _light_copy(model: onnx.ModelProto, image: ImageInput, size: tuple[int, int]):
    """The graph with the image input fixed at 1×C×H×W and weights (initializers or Constant nodes) larger than
    `FOLD_ELEMENTS` given as typed inputs without data (inference needs their shapes, not their bytes; each round
    copies the graph); returns it and the small constants."""
    light = onnx.ModelProto(ir_version=max(model.ir_version, 4))  # IR 4: weights need not be listed as inputs
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    for node in model.graph.node:  # with their attributes and subgraphs; weights in Constant nodes as typed inputs
        value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        if node.op_type == "Constant" and value is not None and math.prod(value.dims) > FOLD_ELEMENTS:
            graph.input.append(helper.make_tensor_value_info(node.output[0], value.data_type, list(value.dims)))
        else:
            graph.node.append(node)
    graph.output.extend(helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None)
                        for o in model.graph.output)  # declared output shapes are not trusted
    known: dict[str, np.ndarray] = {}
    weights = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name == image.name:
            graph.input.append(helper.make_tensor_value_info(value.name, onnx.TensorProto.FLOAT,
                                                             [1, image.channels, *size]))
        elif value.name not in weights:
            graph.input.append(value)
    for tensor in model.graph.initializer:
        if math.prod(tensor.dims) <= FOLD_ELEMENTS:
            graph.initializer.append(tensor)
            known[tensor.name] = numpy_helper.to_array(tensor)
        else:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return light, known


def _infer(light: onnx.ModelProto) -> Shapes:
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference gives up on some graph: what it knew is lost, the probe fills in
        log.info("shape inference failed: %s", exc)
        inferred = light
    shapes: Shapes = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor = value.type.tensor_type
        dims = None
        if value.type.HasField("tensor_type") and tensor.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            dims = None if any(d is None for d in dims) else dims
        shapes[value.name] = (dims, tensor.elem_type)
    for tensor in inferred.graph.initializer:
        shapes[tensor.name] = (list(tensor.dims), tensor.data_type)
    return shapes


def _fold(light: onnx.ModelProto, shapes: Shapes, known: dict[str, np.ndarray], origins: dict[str, int],
          opset: int) -> dict[str, np.ndarray]:
    """Values of the nodes that can be computed now from known values and shapes (in graph order, so a chain
    folds in one pass); never a node whose output comes from the input's values."""
    values = dict(known)
    folded: dict[str, np.ndarray] = {}
    for node in light.graph.node:
        outputs = [name for name in node.output if name]
        if node.op_type not in FOLDABLE or not outputs or all(name in values for name in outputs):
            continue
        if any(origins.get(name, VALUES) == VALUES for name in outputs):
            continue
        try:
            results = _evaluate(node, shapes, values, opset)
        except Exception as exc:  # an op the reference cannot run on these values: the probe fills in
            log.info("not folded: %s (%s): %s", node.name or node.output[0], node.op_type, exc)
            continue
        for name, value in zip(node.output, results or []):
            value = np.asarray(value)
            if name and value.size <= FOLD_ELEMENTS:
                values[name] = folded[name] = value
    return folded


def _evaluate(node: onnx.NodeProto, shapes: Shapes, values: dict[str, np.ndarray], opset: int) -> list | None:
    """The node's output values, or None while an input is unknown or the result would not be small."""
    from onnx.reference import ReferenceEvaluator

    if node.op_type in ("Shape", "Size"):
        return _shape_of(node, shapes)
    inputs = [values.get(name) if name else None for name in node.input]
    if any(v is None for v, name in zip(inputs, node.input) if name) or not _small(node, inputs):
        return None
    feeds = {name: v for name, v in zip(node.input, inputs) if name}
    graph = helper.make_graph(
        [node], "fold", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), None)
                         for n, v in feeds.items()],
        [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n])
    # as a model, so the evaluator runs the op's version of the model's opset (a bare node gets the newest)
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])).run(None, feeds)


def _shape_of(node: onnx.NodeProto, shapes: Shapes) -> list[np.ndarray] | None:
    dims = shapes.get(node.input[0], (None, 0))[0]
    if dims is None:
        return None
    if node.op_type == "Size":
        return [np.array(_elements(dims), np.int64)]
    attrs = {a.name: a.i for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(dims))
    return [np.array(dims[start:end] if "end" in attrs else dims[start:], np.int64)]


def _small(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> bool:
    """Whether evaluating the node on these inputs stays a few numbers (ops that make a tensor of a given shape
    are sized first)."""
    if any(v is not None and v.size > FOLD_ELEMENTS for v in inputs):
        return False
    if node.op_type == "Constant":
        return all(math.prod(a.t.dims) <= FOLD_ELEMENTS for a in node.attribute if a.HasField("t"))
    try:
        if node.op_type == "ConstantOfShape":
            return _elements(inputs[0].reshape(-1).tolist()) <= FOLD_ELEMENTS
        if node.op_type == "Expand":
            return _elements(np.broadcast_shapes(inputs[0].shape, tuple(inputs[1].reshape(-1).tolist()))) \
                <= FOLD_ELEMENTS
        if node.op_type == "Tile":
            return inputs[0].size * _elements(inputs[1].reshape(-1).tolist()) <= FOLD_ELEMENTS
        if node.op_type == "Range":
            start, limit, delta = (float(v.reshape(-1)[0]) for v in inputs[:3])
            return delta != 0 and math.ceil((limit - start) / delta) <= FOLD_ELEMENTS
    except (ValueError, TypeError, IndexError, AttributeError):
        return False
    return True


def _as_constants(light: onnx.ModelProto, folded: dict[str, np.ndarray]) -> None:
    """Replace the nodes whose outputs are all folded by initializers holding their values."""
    graph = light.graph
    nodes = list(graph.node)
    done = [all(name in folded for name in n.output if name) for n in nodes]
    del graph.node[:]
    graph.node.extend(n for n, gone in zip(nodes, done) if not gone)
    for node, gone in zip(nodes, done):
        if gone:
            graph.initializer.extend(numpy_helper.from_array(folded[name], name) for name in node.output if name)


def _macs(node: onnx.NodeProto, shapes: Shapes, out: int) -> int:
    """Multiply-accumulates of one Conv, ConvTranspose, Gemm or MatMul node producing `out` elements."""
    def dims(i: int) -> list[int]:
        return (shapes.get(node.input[i], (None, 0))[0] or []) if i < len(node.input) else []

    if node.op_type == "Conv":
        return out * _elements(dims(1)[1:])  # W is M × C/group × kH × kW
    if node.op_type == "ConvTranspose":
        return _elements(dims(0)) * _elements(dims(1)[1:])  # each input element meets M/group × kH × kW weights
    a = dims(0)
    if not a:
        return 0
    if node.op_type == "Gemm":
        trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
        return out * (a[0] if trans_a else a[-1])
    return out * a[-1]  # MatMul


def _elements(dims) -> int:
    return math.prod(max(int(d), 0) for d in dims)


def _itemsize(kind: int) -> int:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(kind)).itemsize
    except Exception:  # an undefined or string type
        return 4
