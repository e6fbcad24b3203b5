"""Static checks of an uploaded ONNX file, before anything of it is run.

Each refusal is a `ModelRejected` with a stable code and a sentence that tells the user what to
change. Parsing reads the protobuf only: no external data is ever opened, no code is run,
nothing is unpickled. The checks, in order: size; well-formed ONNX; external data anywhere
(refused whatever its path); opset range; custom domains and model-local functions; node count;
ops outside `SUPPORTED_OPS`; exactly one float N×C×H×W image input within the pixel limit;
constant-shaped `ConstantOfShape`/`Expand`/`Tile` asking for more elements than allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from models.ops import SUPPORTED_OPS

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Limits:
    """What an uploaded model may ask for (bytes, opsets, nodes, input pixels, elements)."""

    max_bytes: int = 600 * 1024 * 1024
    min_opset: int = 7
    max_opset: int = 22
    max_nodes: int = 5000
    max_input_pixels: int = 2048 * 2048
    max_constant_elements: int = 64 * 1024 * 1024
    max_flops: int = 200 * 10**9  # per image at the model's input size (`models.cost`)
    max_activation_bytes: int = 2 * 1024**3  # per image: every node output (`models.cost`)


class ModelRejected(ValueError):
    """A model convscope will not accept; `status` is 413 for size, else 422."""

    def __init__(self, code: str, message: str, details: object = None, status: int = 422):
        super().__init__(message)
        self.code, self.message, self.details, self.status = code, message, details, status

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "details": self.details, "status": self.status}


@dataclass(frozen=True)
class ImageInput:
    """The declared image input: name, channels, H and W (None where symbolic), batch (None: any)."""

    name: str
    channels: int
    height: int | None
    width: int | None
    batch: int | None


def check(data: bytes, limits: Limits = Limits()) -> tuple[onnx.ModelProto, ImageInput]:
    """Parse and check ONNX bytes; returns the model and its image input, or raises `ModelRejected`."""
    if len(data) > limits.max_bytes:
        raise ModelRejected("model_too_large", f"the file is {len(data)} bytes; the limit is {limits.max_bytes}",
                            status=413)
    model = parse(data)
    check_external_data(model)
    check_opset(model, limits)
    check_nodes(model, limits)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise ModelRejected("malformed_onnx", f"the file is not a well-formed ONNX model: {_first_line(exc)}") from None
    image = image_input(model, limits)
    check_constant_sizes(model, limits)
    return model, image


def parse(data: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # DecodeError, or RecursionError-like errors of a hostile protobuf
        raise ModelRejected("not_onnx", f"the file is not an ONNX model (the protobuf does not parse: {exc})") from None
    if not model.HasField("graph") or not model.graph.node or not model.opset_import or model.ir_version < 3:
        raise ModelRejected("not_onnx", "the file is not an ONNX model: it has no graph, nodes, opset or IR version; "
                            "send the .onnx file written by torch.onnx.export or onnx.save_model")
    return model


def tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor stored in the file: initializers, sparse ones, and those in node attributes,
    in every subgraph and model-local function."""
    graphs = [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs:
        graph = graphs.pop()
        for t in graph.initializer:
            yield t.name, t
        for s in graph.sparse_initializer:
            yield s.values.name, s.values
            yield s.indices.name, s.indices
        nodes += list(graph.node)
        while nodes:
            node = nodes.pop()
            for a in node.attribute:
                where = f"attribute {a.name!r} of node {node.name or node.op_type!r}"
                if a.HasField("t"):
                    yield where, a.t
                for t in a.tensors:
                    yield where, t
                for s in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                    yield where, s.values
                    yield where, s.indices
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)


def check_external_data(model: onnx.ModelProto) -> None:
    """Refuse any tensor whose data lives outside the file, whatever its location says."""
    for name, tensor in tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            raise ModelRejected(
                "external_data",
                f"tensor {name!r} keeps its data outside the file (location {location[:200]!r}); convscope accepts "
                "only self-contained ONNX files: save with onnx.save_model(model, path, save_as_external_data=False)",
                details={"tensor": name, "location": location[:200]})


def default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)


def check_opset(model: onnx.ModelProto, limits: Limits) -> None:
    version = default_opset(model)
    if version is None or not limits.min_opset <= version <= limits.max_opset:
        raise ModelRejected(
            "unsupported_opset",
            f"the model uses opset {version}; convscope supports opsets {limits.min_opset} to {limits.max_opset}: "
            "export again with opset_version in that range (or convert with onnx.version_converter)",
            details={"opset": version, "min": limits.min_opset, "max": limits.max_opset})
    if len(model.functions):
        raise ModelRejected("custom_functions", "the model defines its own functions "
                            f"({', '.join(sorted(f.name for f in model.functions))}); export without custom functions")


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from all_nodes(sub)


def check_nodes(model: onnx.ModelProto, limits: Limits) -> None:
    nodes = list(all_nodes(model.graph))
    if len(nodes) > limits.max_nodes:
        raise ModelRejected("too_many_nodes", f"the graph has {len(nodes)} nodes; the limit is {limits.max_nodes}",
                            details={"nodes": len(nodes), "limit": limits.max_nodes})
    custom = sorted({f"{n.domain}.{n.op_type}" for n in nodes if n.domain not in DEFAULT_DOMAINS})
    if custom:
        raise ModelRejected(
            "custom_ops", f"the model uses ops from custom domains: {', '.join(custom[:20])}; convscope runs only "
            "standard ONNX ops (ai.onnx)", details={"ops": custom})
    unsupported = sorted({n.op_type for n in nodes if n.op_type not in SUPPORTED_OPS})
    if unsupported:
        raise ModelRejected(
            "unsupported_ops", f"the model uses ops convscope cannot run and differentiate: {', '.join(unsupported)}",
            details={"unsupported": unsupported, "supported": sorted(SUPPORTED_OPS)})


def image_input(model: onnx.ModelProto, limits: Limits) -> ImageInput:
    """The one graph input that is not also an initializer: float, N×C×H×W, C in {1, 3}."""
    weights = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ModelRejected("no_image_input", f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}"
                            "); convscope needs exactly one image input N×C×H×W", details=[i.name for i in inputs])
    value = inputs[0]
    kind = value.type.WhichOneof("value")
    tensor = value.type.tensor_type
    if kind != "tensor_type" or tensor.elem_type != onnx.TensorProto.FLOAT:
        raise ModelRejected("no_image_input", f"the input {value.name!r} is not a float32 tensor; "
                            "convscope feeds float32 images")
    dims = list(tensor.shape.dim) if tensor.HasField("shape") else []
    if len(dims) != 4:
        raise ModelRejected("no_image_input", f"the input {value.name!r} has {len(dims)} dimensions; "
                            "an image input is N×C×H×W (4 dimensions)")
    fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    if fixed[1] not in (1, 3):
        declared = "does not declare its channel count" if fixed[1] is None else f"declares {fixed[1]} channels"
        raise ModelRejected("no_image_input", f"the input {value.name!r} {declared}; convscope feeds 1 (grey) "
                            "or 3 (colour) channels, channels first (N×C×H×W)")
    if fixed[0] not in (None, 1):
        raise ModelRejected("no_image_input", f"the input's batch dimension is fixed at {fixed[0]}; "
                            "export with batch 1 or a dynamic batch axis")
    height, width = fixed[2], fixed[3]
    if height and width and height * width > limits.max_input_pixels:
        raise ModelRejected("input_too_large", f"the input is {height}×{width} pixels; the limit is "
                            f"{limits.max_input_pixels} pixels", details={"height": height, "width": width})
    return ImageInput(value.name, fixed[1], height, width, fixed[0])


def _constant_values(model: onnx.ModelProto) -> dict[str, list[int]]:
    values = {}
    small = [(i.name, i) for i in model.graph.initializer if math.prod(i.dims) <= 16 and i.data_type == 7]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == 7 and math.prod(a.t.dims) <= 16:
                    small.append((node.output[0], a.t))
                elif a.name == "value_ints":
                    values[node.output[0]] = list(a.ints)
    for name, t in small:
        values[name] = [int(v) for v in numpy_helper.to_array(t).reshape(-1)]
    return values


def check_constant_sizes(model: onnx.ModelProto, limits: Limits) -> None:
    """Refuse ops whose output size is fixed by constants and too big (a bomb caught before it runs)."""
    constants = _constant_values(model)
    for node in all_nodes(model.graph):
        if node.op_type in ("ConstantOfShape", "Expand", "Tile") and len(node.input) > (node.op_type != "ConstantOfShape"):
            shape = constants.get(node.input[0 if node.op_type == "ConstantOfShape" else 1])
            if shape is None:
                continue
            elements = math.prod(max(int(s), 1) for s in shape)
            if elements > limits.max_constant_elements:
                raise ModelRejected(
                    "tensor_too_large", f"node {node.name or node.output[0]!r} ({node.op_type}) asks for a tensor of "
                    f"{elements} elements; the limit is {limits.max_constant_elements}",
                    details={"node": node.name or node.output[0], "op": node.op_type, "shape": shape})


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or ["unknown error"])[0][:300]
