"""A differentiable torch twin of an ONNX classifier, for the gradient methods of the workers.

The ONNX graph is converted node by node (`models.twin_ops`) into a `torch.nn.Module` that
runs the nodes in graph order, eagerly, so shape arithmetic (the built-in model computes its
SAME padding from `Shape` at run time) works at any input size. Before converting:

- `Constant` nodes, and every node whose inputs are all constants, are folded (weights given
  as nodes become ordinary parameters);
- inference `Dropout` becomes `nn.Identity` on its data output (the mask is never used);
- only the nodes needed for the class scores and the layer list are kept, so a trailing
  `Softmax` is dropped: the twin returns logits.

Every named tensor of the graph is the output of exactly one module (`Twin.layer_module`), so a
forward hook on it sees — and may replace — that tensor. Parameters do not require gradients.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from core.model_record import ModelRecord
from models.twin_base import If, Lambda, NodeContext, Step, Unsupported
from models.twin_ops import as_tensor, constant_attribute
from models.twin_table import CONVERTERS

Lookup = Callable[[str], torch.Tensor]


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def referenced(node: onnx.NodeProto) -> list[str]:
    """Names a node reads, including those its subgraphs read from the enclosing scope."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            local = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
            names += [n for sub in graph.node for n in referenced(sub) if n not in local]
    return names


class OnnxGraph(nn.Module):
    """The converted steps of one (sub)graph and the constants they read at run time."""

    def __init__(self, steps: list[Step], constants: dict[str, torch.Tensor], outputs: list[str]):
        super().__init__()
        self.ops = nn.ModuleDict()
        self.plan: list[tuple[str, list[str], list[str], list[str]]] = []
        self.outputs = outputs
        self.producer: dict[str, str] = {}
        self.consts = nn.Module()
        self._const_attr: dict[str, str] = {}
        used = {n for s in steps for n in s.inputs + _sub_refs(s.module)} | set(outputs)
        for name, value in constants.items():
            if name in used:
                attr = f"c{len(self._const_attr)}"
                self.consts.register_buffer(attr, value, persistent=False)
                self._const_attr[name] = attr
        last_use = {}
        for i, step in enumerate(steps):
            for name in step.inputs + _sub_refs(step.module):
                last_use[name] = i
        for i, step in enumerate(steps):
            key = f"n{i}_{re.sub(r'[^A-Za-z0-9_]', '_', step.outputs[0])[-48:]}"
            self.ops[key] = step.module
            frees = [n for n in set(step.inputs) if last_use.get(n) == i and n not in outputs]
            self.plan.append((key, step.inputs, step.outputs, frees))
            for name in step.outputs:
                self.producer[name] = key

    def run(self, outer: Lookup | None, env: dict | None = None, keep_all: bool = False) -> list[torch.Tensor]:
        env = {} if env is None else env

        def lookup(name: str):
            if not name:
                return None
            if name in env:
                return env[name]
            attr = self._const_attr.get(name)
            if attr is not None:
                return getattr(self.consts, attr)
            if outer is not None:
                return outer(name)
            raise KeyError(f"tensor {name!r} is not computed by the twin")

        for key, inputs, outputs, frees in self.plan:
            module = self.ops[key]
            args = [lookup(n) for n in inputs]
            value = module(args[0], lookup) if isinstance(module, If) else module(*args)
            if len(outputs) == 1:
                env[outputs[0]] = value
            else:
                env.update(zip(outputs, value))
            if not keep_all:
                for name in frees:
                    env.pop(name, None)
        return [lookup(n) for n in self.outputs]


def _sub_refs(module: nn.Module) -> list[str]:
    return getattr(module, "outer_refs", [])


class TwinModule(nn.Module):
    """N×C×H×W model-space input → N×classes logits (the class scores before any Softmax); for a model
    without class scores, its output flattened per image."""

    def __init__(self, graph: OnnxGraph, input_name: str, logits_name: str):
        super().__init__()
        self.graph, self.input_name, self.logits_name = graph, input_name, logits_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.graph.run(None, {self.input_name: x})[0]
        return logits.reshape(logits.shape[0], -1)

    @torch.no_grad()
    def tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor the twin computes, by ONNX name (for locating a disagreement with ONNX Runtime)."""
        env = {self.input_name: x}
        self.graph.run(None, env, keep_all=True)
        return env


@dataclass
class Twin:
    """The torch twin of one model; `module` is in eval mode, float32."""

    module: TwinModule

    def layer_module(self, name: str) -> nn.Module:
        """The module whose forward output is the tensor `name` (a name from the record's layers)."""
        key = self.module.graph.producer.get(name)
        if key is None:
            raise KeyError(f"the twin has no module producing {name!r}")
        return self.module.graph.ops[key]


class _Converter:
    def __init__(self, opset: int):
        self.opset = opset
        self.counter = [0]

    def graph(self, graph: onnx.GraphProto, outputs: list[str], keep: set[str], parent: Callable | None) -> OnnxGraph:
        constants: dict[str, torch.Tensor] = {}
        for init in graph.initializer:
            constants[init.name] = as_tensor(numpy_helper.to_array(init))

        def const(name: str):
            if name in constants:
                return constants[name]
            return parent(name) if parent is not None else None

        steps: list[Step] = []
        for node in self._needed(graph, set(outputs) | keep):
            if node.op_type == "Constant":
                constants[node.output[0]] = constant_attribute(node)
                continue
            converter = CONVERTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if converter is None:
                raise Unsupported(f"op {node.domain + '.' if node.domain else ''}{node.op_type} is not supported")
            context = NodeContext(node, self.opset, const, self._subgraph(const), counter=self.counter)
            node_steps = self._steps(node, converter(context))
            if all(self._foldable(s, const) for s in node_steps):
                self._fold(node_steps, const, constants)
            else:
                steps += node_steps
        return OnnxGraph(steps, constants, outputs)

    def _subgraph(self, const: Callable):
        def build(graph: onnx.GraphProto) -> OnnxGraph:
            sub = self.graph(graph, [o.name for o in graph.output], set(), const)
            sub.outer_refs = [n for node in graph.node for n in referenced(node)]
            return sub
        return build

    @staticmethod
    def _needed(graph: onnx.GraphProto, wanted: set[str]) -> list[onnx.NodeProto]:
        needed, keep = set(wanted), []
        for node in reversed(graph.node):
            if any(o in needed for o in node.output):
                keep.append(node)
                needed.update(referenced(node))
        return keep[::-1]

    @staticmethod
    def _steps(node: onnx.NodeProto, result) -> list[Step]:
        if isinstance(result, nn.Module):
            result = Step(result, list(node.input), list(node.output))
        steps = [result] if isinstance(result, Step) else list(result)
        out: list[Step] = []
        for step in steps:
            if len(step.outputs) > 1:
                if isinstance(step.module, If):
                    step.module.outer_refs = referenced(node)
                packed = f"{step.outputs[0]}::all"
                out.append(Step(step.module, step.inputs, [packed]))
                out += [Step(Lambda("Output", _pick, index=i), [packed], [name])
                        for i, name in enumerate(step.outputs) if name]
            else:
                if isinstance(step.module, If):
                    step.module.outer_refs = referenced(node)
                out.append(step)
        return out

    @staticmethod
    def _foldable(step: Step, const: Callable) -> bool:
        return not isinstance(step.module, If) and all(const(n) is not None for n in step.inputs if n)

    @staticmethod
    def _fold(steps: list[Step], const: Callable, constants: dict) -> None:
        with torch.no_grad():
            for step in steps:
                value = step.module(*[const(n) if n else None for n in step.inputs])
                values = [value] if len(step.outputs) == 1 else list(value)
                for name, v in zip(step.outputs, values):
                    constants[name] = v.detach() if isinstance(v, torch.Tensor) else v


def _pick(packed, index: int):
    return packed[index]


def build_twin(model: onnx.ModelProto, input_name: str, logits_name: str, layers: list[str] = ()) -> Twin:
    """Convert a parsed, validated ONNX model; raises `Unsupported` naming the node it cannot convert."""
    graph = _Converter(default_opset(model)).graph(model.graph, [logits_name], set(layers), None)
    graph.outer_refs = []
    module = TwinModule(graph, input_name, logits_name).float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return Twin(module)


def load_twin(record: ModelRecord, onnx_bytes: bytes) -> Twin:
    """The twin of a stored model (its ONNX file passed validation and the equivalence probe)."""
    model = onnx.load_model_from_string(onnx_bytes)
    return build_twin(model, record.input_name, record.logits_name, [layer.name for layer in record.layers or []])
