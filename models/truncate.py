"""The sub-graph of an ONNX file that computes one tensor: every node it needs, nothing after it.

A layer's activations need only the part of the network in front of the layer. `truncate` writes a
copy of the file whose graph has that tensor as its output and keeps only the nodes it depends on
(walked back from the output, subgraph inputs of If/Loop/Scan included), the initializers those nodes
read, and the value infos of the tensors they make.

Same numbers as the probe session (every layer an output): ONNX Runtime fuses a Conv with a following
Add (a residual sum accumulated into the convolution), BatchNormalization or Mul into one kernel, which
rounds differently (measured on EfficientNet-Lite0: up to 1.7e-5 after the first residual block). A tensor
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
        kept, needed, todo = set(), set(), [output]
        while todo:
            name = todo.pop()
            if name in needed:
                continue
            needed.add(name)
            if name in maker and maker[name][0] not in kept:
                index, node = maker[name]
                kept.add(index)
                todo.extend(_node_inputs(node))
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
