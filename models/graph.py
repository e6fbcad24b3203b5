"""The layer graph of an ONNX classifier: spatial tensors, their shapes and receptive fields.

Shapes and the values of small shape-computing tensors (dynamic `Pad` amounts, `Slice` starts)
come from one probe run of ONNX Runtime at the model's input size with every tensor made an
output; receptive fields are then propagated node by node in graph order (ONNX requires
topological order), per axis, with the arithmetic of Dumoulin & Visin (2016):

    size'  = size + (k_eff - 1) * stride        k_eff = (k - 1) * dilation + 1
    stride' = stride * s
    start' = start - pad_begin * stride

Element-wise merges and `Concat` take the union of their inputs' fields (the largest field).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from core.model_record import Layer, ReceptiveField

# Ops whose output is plumbing, not a layer a person would want to look at.
PLUMBING = {
    "Pad", "Slice", "Identity", "Dropout", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
    "Constant", "ConstantOfShape", "Shape", "Gather", "Expand", "Flatten", "If", "Split", "Tile", "Where",
}
WINDOWED = {"Conv", "MaxPool", "AveragePool", "LpPool"}
# Ops whose output describes the input's shape, not its pixels: no receptive field flows through.
METADATA = {"Shape", "Size", "ConstantOfShape"}
# Between a trailing Softmax and the graph output (a head that flattens the probabilities).
HEAD_PLUMBING = {"Identity", "Flatten", "Reshape", "Squeeze", "Dropout"}


@dataclass(frozen=True)
class Field:
    """Receptive field along one axis: size, stride (jump) and start, in input pixels."""

    size: int = 1
    stride: int = 1
    start: int = 0

    def windowed(self, kernel: int, stride: int, dilation: int, pad_begin: int) -> Field:
        k_eff = (kernel - 1) * dilation + 1
        return Field(self.size + (k_eff - 1) * self.stride, self.stride * stride, self.start - pad_begin * self.stride)

    def shifted(self, offset: int, step: int = 1) -> Field:
        return Field(self.size, self.stride * step, self.start + offset * self.stride)

    @staticmethod
    def union(fields: list[Field]) -> Field:
        start = min(f.start for f in fields)
        end = max(f.start + f.size for f in fields)
        return Field(end - start, max(f.stride for f in fields), start)


def image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The graph input that is not an initializer (old exports list weights as inputs too)."""
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ValueError(f"the model has {len(inputs)} non-weight inputs; convscope needs exactly one image input")
    return inputs[0]


def logits_name(model: onnx.ModelProto) -> str:
    """The class-score tensor: the first graph output, or the input of a trailing Softmax
    (also when only reshaping ops stand between the Softmax and the output)."""
    out = model.graph.output[0].name
    producer = {o: node for node in model.graph.node for o in node.output}
    name = out
    while name in producer:
        node = producer[name]
        if node.op_type in ("Softmax", "LogSoftmax"):
            return node.input[0]
        if node.op_type not in HEAD_PLUMBING:
            break
        name = node.input[0]
    return out


def probe_session(model: onnx.ModelProto, providers: list[str], threads: int = 1):
    """An unoptimised ONNX Runtime session with every node output exposed (the model is not modified)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # failures come back as exceptions; keep ORT's own log quiet
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    data = probe.SerializeToString()
    del probe
    return ort.InferenceSession(data, options, providers=providers)


def probe_values(model: onnx.ModelProto, input_name: str, shape: tuple[int, ...], providers: list[str],
                 x: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run the model once (on zeros, or on `x`) with every node output exposed; returns name → array."""
    session = probe_session(model, providers)
    names = [o.name for o in session.get_outputs()]
    x = np.zeros(shape, np.float32) if x is None else x
    values = dict(zip(names, session.run(names, {input_name: x})))
    values.setdefault(input_name, x)
    return values


def node_attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes, name → Python value."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def window_pads(attrs: dict, size_in, kernel, strides, dilations, rank: int = 2) -> tuple[int, int]:
    """Padding before the two spatial axes of a Conv or pooling window (`kernel`, `strides`, `dilations`: those
    axes'; `rank`: the window's axes): `auto_pad` SAME_UPPER / SAME_LOWER worked out from the input's (H, W)
    `size_in`, VALID none, else the begin half of `pads` (its last two)."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for axis in range(2):
            n, s, k_eff = size_in[axis], strides[axis], (kernel[axis] - 1) * dilations[axis] + 1
            total = max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
            pads.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        return pads[0], pads[1]
    if auto == "VALID":
        return 0, 0
    pads = list(attrs.get("pads", [0] * (2 * rank)))[:rank][-2:]
    return int(pads[0]), int(pads[1])


def pad_amounts(node: onnx.NodeProto, attrs: dict, value) -> tuple[dict[int, int], dict[int, int]]:
    """(axis → padding before, axis → padding after) of a `Pad` node: from its `pads` attribute (opset < 11) or
    its inputs, whose values `value(name)` gives (the pad amounts, and the axes they apply to when given)."""
    pads = attrs.get("pads")
    if pads is None:
        pads = value(node.input[1])
    pads = [int(p) for p in np.asarray(pads).ravel()]
    axes = list(range(len(pads) // 2))
    if len(node.input) > 3 and node.input[3]:
        axes = [int(a) % 4 for a in np.asarray(value(node.input[3]))]
    return dict(zip(axes, pads[:len(axes)])), dict(zip(axes, pads[len(axes):]))


def constant_through_casts(name: str, values: dict[str, np.ndarray],
                           producer: dict[str, onnx.NodeProto]) -> np.ndarray | None:
    """The constant `name` as float32, also when given through `Identity` or `Cast` of one; None if not a constant
    (`values`: the constants, `producer`: tensor → the node that makes it)."""
    while name not in values and name in producer and producer[name].op_type in ("Identity", "Cast"):
        name = producer[name].input[0]
    value = values.get(name)
    return None if value is None else np.asarray(value, np.float32)


class _Walker:
    """Propagates (H field, W field) through the graph; see the module docstring."""

    def __init__(self, model: onnx.ModelProto, values: dict[str, np.ndarray]):
        self.values = values
        self.constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.fields: dict[str, tuple[Field, Field]] = {}

    def value(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in self.constants:
            return self.constants[name]
        return self.values.get(name)

    def spatial(self, name: str) -> tuple[int, int] | None:
        v = self.values.get(name)
        return (v.shape[2], v.shape[3]) if v is not None and v.ndim == 4 else None

    def visit(self, node: onnx.NodeProto) -> None:
        if node.op_type == "Constant":
            if "value" in node_attrs(node):
                self.constants[node.output[0]] = numpy_helper.to_array(node_attrs(node)["value"])
            return
        if node.op_type in METADATA:
            return
        names = list(node.input) + (_outer_names(node) if node.op_type == "If" else [])
        inputs = [self.fields[i] for i in names if i in self.fields]
        if not inputs:
            return
        attrs = node_attrs(node)
        first = self.values.get(node.input[0])
        spatial_in = first is None or first.ndim == 4
        if node.op_type in WINDOWED and spatial_in:
            out = self._windowed(node, attrs, inputs[0])
        elif node.op_type == "Pad" and spatial_in:
            out = self._pad(node, attrs, inputs[0])
        elif node.op_type == "Slice" and spatial_in:
            out = self._slice(node, attrs, inputs[0])
        elif len(inputs) > 1:
            out = (Field.union([f[0] for f in inputs]), Field.union([f[1] for f in inputs]))
        else:
            out = inputs[0]
        for name in node.output:
            if name in self.values:
                self.fields[name] = out

    def _windowed(self, node, attrs, fin):
        """Conv/pooling on the last two (spatial) axes; a 3-D window on N×C×D×H×W uses its last two."""
        if node.op_type == "Conv" and "kernel_shape" not in attrs:
            attrs["kernel_shape"] = list(self.value(node.input[1]).shape[2:])
        rank = len(attrs["kernel_shape"])
        kernel = attrs["kernel_shape"][-2:]
        strides = list(attrs.get("strides", [1] * rank))[-2:]
        dilations = list(attrs.get("dilations", [1] * rank))[-2:]
        pads = window_pads(attrs, self.spatial(node.input[0]), kernel, strides, dilations, rank)
        return tuple(fin[axis].windowed(kernel[axis], strides[axis], dilations[axis], pads[axis]) for axis in range(2))

    def _pad(self, node, attrs, fin):
        begin, _ = pad_amounts(node, attrs, self.value)
        return (fin[0].shifted(-begin.get(2, 0)), fin[1].shifted(-begin.get(3, 0)))

    def _slice(self, node, attrs, fin):
        if "starts" in attrs:  # opset < 10
            starts, axes = attrs["starts"], attrs.get("axes", list(range(len(attrs["starts"]))))
            steps = [1] * len(starts)
        else:
            starts = self.value(node.input[1]).tolist()
            axes = self.value(node.input[3]).tolist() if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
            steps = self.value(node.input[4]).tolist() if len(node.input) > 4 and node.input[4] else [1] * len(starts)
        size_in = self.spatial(node.input[0])
        out = list(fin)
        for start, axis, step in zip(starts, axes, steps):
            axis = int(axis) % 4
            if axis in (2, 3):
                n = size_in[axis - 2]
                start = min(max(start + n if start < 0 else start, 0), n)
                out[axis - 2] = fin[axis - 2].shifted(int(start), int(step))
        return tuple(out)


def receptive_fields(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> dict[str, tuple[Field, Field]]:
    """(H, W) receptive fields of every spatial tensor of the graph."""
    walker = _Walker(model, values)
    walker.fields[image_input(model).name] = (Field(), Field())
    for node in model.graph.node:
        walker.visit(node)
    return walker.fields


def layers(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> list[Layer]:
    """Every spatial layer (4-D float output with more than one position) with its field."""
    fields = receptive_fields(model, values)
    found = []
    for node in model.graph.node:
        if node.op_type in PLUMBING:
            continue
        for name in node.output:
            v = values.get(name)
            if name in fields and v is not None and v.dtype == np.float32 and v.ndim == 4 and v.shape[2] * v.shape[3] > 1:
                fh, _ = fields[name]
                found.append(Layer(
                    name=name, op=node.op_type, shape=list(v.shape[1:]),
                    receptive_field=ReceptiveField(size=fh.size, stride=fh.stride, start=fh.start),
                ))
    return found


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and the outputs of `Constant` nodes (weights are sometimes given as nodes)."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and "value" in node_attrs(node):
            values[node.output[0]] = numpy_helper.to_array(node_attrs(node)["value"])
    return values


def conv_weights(model: onnx.ModelProto, tensor: str) -> np.ndarray | None:
    """The O×I×kh×kw weights of the Conv that produces `tensor`, or None if no Conv does
    (weights reached through `Identity` or `Cast` of a constant are followed)."""
    producer = {o: node for node in model.graph.node for o in node.output}
    node = producer.get(tensor)
    if node is None or node.op_type != "Conv":
        return None
    return constant_through_casts(node.input[1], constant_values(model), producer)


def _outer_names(node: onnx.NodeProto) -> list[str]:
    """Names the subgraphs of `node` read from the enclosing graph."""
    names = []
    for a in node.attribute:
        for graph in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            local = {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer}
            names += [i for n in graph.node for i in n.input if i and i not in local]
    return names
