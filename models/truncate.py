"""The sub-graph of an ONNX file that computes one tensor: every node it needs, nothing after it.

A layer's activations need only the part of the network in front of the layer. `truncate` writes a
copy of the file whose graph has that tensor as its output and keeps only the nodes it depends on
(walked back from the output, subgraph inputs of If/Loop/Scan included), the initializers those nodes
read, and the value infos of the tensors they make.

Same numbers as the probe session (every layer an output): ONNX Runtime fuses a Conv with a following
Add (a residual sum accumulated into the convolution), BatchNormalization or Mul into one kernel, which
rounds differently from the separate ops. A tensor
that is a graph output cannot be fused away, so the probe's outputs (`probe_outputs`) that such an op
consumes stay outputs of the cut too; the others (a Conv followed by Clip or Relu: fused exactly) do not,
so ONNX Runtime still fuses those. It works on the protobuf's bytes like
`models.runtime.with_outputs`: node and value-info messages are small and parsed; initializers are
copied as bytes, only their name read, so the weights are never decoded (no GIL held for long).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import onnx

from models.runtime import _encode_varint, _fields, _with_starts, single_graph

_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
_GRAPH_SPARSE_INITIALIZER = 15
_TENSOR_NAME, _VALUE_NAME, _SPARSE_VALUES = 8, 1, 1


@dataclass(frozen=True)
class Truncated:
    """What `truncate` kept: nodes (of how many), initializer bytes (the sub-graph's weights, on disk)."""

    nodes: int
    total_nodes: int
    weight_bytes: int


def _name(buf, start: int, end: int, number: int) -> str | None:
    for n, w, s, e in _fields(buf, start, end):
        if n == number and w == 2:
            return bytes(buf[s:e]).decode()
    return None


def _node_inputs(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads, those its subgraphs (If, Loop, Scan) take from the outer scope included."""
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            inner_made = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | \
                         {t.name for t in graph.initializer}
            for inner in graph.node:
                names |= _node_inputs(inner) - inner_made
    return names


def _walk_back(maker: dict, output: str, stop: str | None = None) -> tuple[set, set]:
    """(keys of the nodes `output` depends on, every tensor name they read on the way), from `maker` (tensor →
    (key, node)); the walk does not go past tensor `stop`."""
    kept, needed, todo = set(), set(), [output]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        if name != stop and name in maker and maker[name][0] not in kept:
            key, node = maker[name]
            kept.add(key)
            todo.extend(_node_inputs(node))
    return kept, needed


FUSING = {"Add", "Sum", "Sub", "Mul", "Div", "BatchNormalization", "MatMul", "Gemm"}  # may absorb their input's Conv


def truncate(src: Path, output: str, dst: Path, probe_outputs: list[str] = ()) -> Truncated:
    """Write to `dst` the sub-graph of the ONNX file `src` that computes the tensor `output`: its outputs are `output`
    and those of `probe_outputs` that the sub-graph makes and a `FUSING` op of it reads (in order); ValueError when no
    node of the graph makes `output`."""
    with open(src, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        tag_start, g_start, g_end = single_graph(buf)
        fields = list(_with_starts(buf, g_start, g_end))
        nodes = [(i, onnx.NodeProto.FromString(bytes(buf[s:e]))) for i, (_, (n, w, s, e)) in enumerate(fields)
                 if n == _GRAPH_NODE and w == 2]
        maker = {out: (i, node) for i, node in nodes for out in node.output if out}
        if output not in maker:
            raise ValueError(f"no node of the graph makes {output!r}")
        kept, needed = _walk_back(maker, output)
        made = {out for i, node in nodes if i in kept for out in node.output}
        fused_into = {name for i, node in nodes if i in kept and node.op_type in FUSING for name in node.input}
        also = [name for name in probe_outputs if name in made and name in fused_into]
        out = bytearray()
        weight_bytes = 0
        for i, (tag, (n, w, s, e)) in enumerate(fields):
            if w == 2 and n == _GRAPH_NODE and i not in kept:
                continue
            if w == 2 and n == _GRAPH_OUTPUT:
                continue
            if w == 2 and n == _GRAPH_INITIALIZER:
                if _name(buf, s, e, _TENSOR_NAME) not in needed:
                    continue
                weight_bytes += e - s
            if w == 2 and n == _GRAPH_SPARSE_INITIALIZER:
                values = next(((vs, ve) for vn, vw, vs, ve in _fields(buf, s, e) if vn == _SPARSE_VALUES and vw == 2),
                              None)
                if values is None or _name(buf, *values, _TENSOR_NAME) not in needed:
                    continue
            if w == 2 and n == _GRAPH_INPUT and _name(buf, s, e, _VALUE_NAME) not in needed:
                continue  # an initializer listed as an input (old exporters) that the sub-graph does not read
            if w == 2 and n == _GRAPH_VALUE_INFO and _name(buf, s, e, _VALUE_NAME) not in made:
                continue
            out += buf[tag:e]
        for name in dict.fromkeys([output, *also]):
            encoded = name.encode()
            value = bytes([(_VALUE_NAME << 3) | 2]) + _encode_varint(len(encoded)) + encoded
            out += bytes([(_GRAPH_OUTPUT << 3) | 2]) + _encode_varint(len(value)) + value
        with open(dst, "wb") as f_out:
            f_out.write(buf[:tag_start])
            f_out.write(bytes([(_MODEL_GRAPH << 3) | 2]) + _encode_varint(len(out)))
            f_out.write(out)
            f_out.write(buf[g_end:])
    return Truncated(len(kept), len(nodes), weight_bytes)


def cut_before(src: Path, layer: str, output: str, dst: Path, layer_shape: list[int]) -> list[str]:
    """Write to `dst` the sub-graph of the ONNX file `src` that computes `output` from the tensor `layer` on: `layer`
    becomes a graph input (float32, N×`layer_shape`), its makers and everything only they need are dropped, and a
    graph input that a path around the layer still reads (a skip connection over it) stays an input. Returns the
    sub-graph's inputs, `layer` first; ValueError when `output` does not depend on `layer`.

    Unlike `truncate` it loads the whole file (weights included): it is built once per model and layer, for the
    methods that run the rest of the network on changed activations (Ablation-CAM)."""
    model = onnx.load_model(str(src))
    graph = model.graph
    nodes = list(graph.node)
    maker = {out: (i, node) for i, node in enumerate(nodes) for out in node.output if out}
    kept, needed = _walk_back(maker, output, stop=layer)
    if layer not in needed:
        raise ValueError(f"{output!r} does not depend on {layer!r}")
    weights = {t.name for t in graph.initializer}
    outer = [i for i in graph.input if i.name in needed and i.name not in weights and i.name != layer]
    made = {out for i in kept for out in nodes[i].output}
    head = onnx.helper.make_tensor_value_info(layer, onnx.TensorProto.FLOAT, ["N", *layer_shape])
    outputs = [o for o in graph.output if o.name == output] or [
        onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)]
    cut = onnx.helper.make_graph(
        [node for i, node in enumerate(nodes) if i in kept], f"{graph.name}-from-{layer}", [head, *outer], outputs,
        initializer=[t for t in graph.initializer if t.name in needed],
        value_info=[v for v in graph.value_info if v.name in made and v.name != layer])
    tail = onnx.helper.make_model(cut, opset_imports=model.opset_import, ir_version=model.ir_version)
    tail.functions.extend(model.functions)
    onnx.save_model(tail, str(dst))
    return [layer, *(i.name for i in outer)]
