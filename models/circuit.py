"""Expanded weights between units: which units of the layer before feed a unit, and how strongly.

Olah et al., "Visualizing Weights" (Distill 2020), and OpenAI Microscope: the weight from unit i of a source layer
to unit c of a later layer is ∂ y_c(centre) / ∂ x_i, the gradient of the unit at the centre of its grid with every
rectifier between them taken as the identity, so that it depends on the weights only, not on an input. For two
adjacent convolutions it is the kernel slice W[c, i] itself; through rectifiers, folded or unfolded BatchNorm,
average pooling, padding, residual sums and concatenations it is the product of the linear maps between them (a
max pool, with no input to pick its winner, is taken as the average of its window). Computed here in numpy from
the ONNX initializers by one backward pass of a one-hot gradient, node by node from the unit back to its sources,
so the API answers it without torch.

The sources of a layer, when the caller names none: walking back from the layer along every path, the first
listed layer reached after crossing a weighted op (Conv, Gemm, MatMul), or a listed layer that more than one node
reads (a junction: the previous block's output, reached through a residual skip). For a convolution that is the
layer it reads; for a block's output, the units before its projection and the previous block's output.

Gradients are held on a box of the tensor's grid (`Window`: values C×h×w, the box's top-left), which may reach
past the grid's edge; what falls outside (padding) is zero, so every unit's window has the same size except that
its outside part is zero, exactly as autograd would give it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx

from core.errors import Invalid
from core.model_record import ModelRecord
from models import graph

WEIGHTED = {"Conv", "Gemm", "MatMul", "ConvTranspose"}
# Taken as the identity: the rectifiers (and their smooth cousins) pass positive inputs unchanged.
RECTIFIERS = {"Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "HardSwish", "Gelu", "Softplus", "Mish"}
PASS = RECTIFIERS | {"Identity", "Dropout"}
SMALL = 64  # int tensors up to this many elements are kept from the probe (pad amounts, slice starts)


class CircuitUnsupported(Invalid):
    """An op between a unit and its sources that is not linear once rectifiers are the identity (a gate, a
    resize): 422 `circuit_unsupported`."""

    def __init__(self, message: str):
        super().__init__(message, code="circuit_unsupported")


@dataclass
class Window:
    """A gradient on a box of a tensor's grid: `values` C×h×w, the box's top-left at (`top`, `left`)."""

    values: np.ndarray
    top: int
    left: int

    def clipped(self, height: int, width: int) -> Window:
        """Zero outside the grid 0 ≤ y < height, 0 ≤ x < width (what falls there is padding, not an input)."""
        _, h, w = self.values.shape
        inside = _inside(np.arange(self.top, self.top + h), np.arange(self.left, self.left + w), height, width)
        if inside.all():
            return self
        return Window(self.values * inside, self.top, self.left)

    def plus(self, other: Window) -> Window:
        """The sum of two windows of the same tensor, on the union of their boxes."""
        top, left, bottom, right = _union_box([self, other])
        out = np.zeros((self.values.shape[0], bottom - top, right - left), np.float32)
        for part in (self, other):
            y, x = part.top - top, part.left - left
            out[:, y:y + part.values.shape[1], x:x + part.values.shape[2]] += part.values
        return Window(out, top, left)


def _union_box(windows: list[Window]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the smallest box holding every window's box (bottom and right exclusive)."""
    return (min(w.top for w in windows), min(w.left for w in windows),
            max(w.top + w.values.shape[1] for w in windows), max(w.left + w.values.shape[2] for w in windows))


def _inside(rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
    """len(rows)×len(cols) mask: True where (row, col) lies on the grid 0 ≤ y < height, 0 ≤ x < width."""
    return ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]


@dataclass
class Plan:
    """The nodes between a layer and its sources, latest first, and the sources themselves."""

    sources: list[str]
    nodes: list[onnx.NodeProto]


@dataclass
class WeightGraph:
    """What the expanded weights of a model need: its nodes, their constants (weights as float32), the shape of
    every tensor and the value of small shape-computing tensors at the model's input size (one probe run)."""

    nodes: list[onnx.NodeProto]
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    small: dict[str, np.ndarray]
    listed: list[str]
    input_name: str
    plans: dict[tuple[str, str | None], Plan] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, record: ModelRecord) -> WeightGraph:
        """The graph of a stored model, probed at its input size."""
        shape = (1, record.input.channels, record.input.height, record.input.width)
        return cls.of(onnx.load_model(str(path)), record.input_name, shape, [layer.name for layer in record.layers or []])

    @classmethod
    def of(cls, model: onnx.ModelProto, input_name: str, shape: tuple[int, ...], listed: list[str]) -> WeightGraph:
        """The graph of `model` (one probe run on zeros of `shape`), whose listed layers are `listed`."""
        values = graph.probe_values(model, input_name, shape, ["CPUExecutionProvider"])
        shapes = {name: tuple(v.shape) for name, v in values.items() if isinstance(v, np.ndarray)}
        small = {name: v for name, v in values.items()
                 if isinstance(v, np.ndarray) and v.size <= SMALL and v.dtype.kind in "iu"}
        del values
        constants = {name: np.asarray(v) for name, v in graph.constant_values(model).items()}
        return cls(list(model.graph.node), constants, shapes, small, list(listed), input_name)

    # ---------------------------------------------------------------- which nodes, which sources

    def plan(self, layer: str, source: str | None = None) -> Plan:
        """The sources of `layer` (the named `source`, or the default ones of the module docstring) and the
        nodes a gradient crosses from the layer back to them, latest first; cached per layer and source."""
        key = (layer, source)
        if key not in self.plans:
            self.plans[key] = self._plan(layer, source)
        return self.plans[key]

    def _plan(self, layer: str, source: str | None) -> Plan:
        listed = set(self.listed) | {self.input_name}
        if source is not None and source not in listed:
            raise Invalid(f"the model has no layer {source!r}", code="unknown_layer")
        allowed = self._descendants(source) if source is not None else None
        sources: list[str] = []
        crossed: set[int] = set()
        seen: set[tuple[str, bool]] = set()
        stack = [(layer, False)]
        while stack:
            name, weighted = stack.pop()
            if (name, weighted) in seen:
                continue
            seen.add((name, weighted))
            node = self._producer.get(name)
            if name != layer and self._is_source(name, weighted, source, listed):
                if name not in sources:
                    sources.append(name)
                continue
            if node is None or not self._data(name):
                continue
            crossed.add(id(node))
            for parent in node.input:
                if parent and self._data(parent) and (allowed is None or parent in allowed):
                    stack.append((parent, weighted or node.op_type in WEIGHTED))
        if not sources:
            where = f"layer {source!r}" if source else "an earlier layer"
            raise Invalid(f"layer {layer!r} is not fed by {where}", code="no_circuit")
        nodes = [node for node in reversed(self.nodes) if id(node) in crossed]
        return Plan([s for s in self.listed + [self.input_name] if s in sources], nodes)

    def _descendants(self, name: str) -> set[str]:
        """`name` and every tensor computed from it."""
        found = {name}
        for node in self.nodes:
            if any(i in found for i in node.input):
                found.update(o for o in node.output if o)
        return found

    def _is_source(self, name: str, weighted: bool, source: str | None, listed: set[str]) -> bool:
        if source is not None:
            return name == source
        if name not in listed:
            return False
        return weighted or name == self.input_name or self._consumers.get(name, 0) > 1

    @cached_property
    def _consumers(self) -> dict[str, int]:
        """How many nodes read each tensor."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            for name in set(node.input):
                counts[name] = counts.get(name, 0) + 1
        return counts

    @cached_property
    def _producer(self) -> dict[str, onnx.NodeProto]:
        return {o: node for node in self.nodes for o in node.output}

    def _constant(self, name: str) -> np.ndarray | None:
        """A constant input (weights, a scale), also when given through `Identity` or `Cast` of one."""
        return graph.constant_through_casts(name, self.constants, self._producer)

    def _data(self, name: str) -> bool:
        """A tensor that carries the image (4-D, not a constant)."""
        return name not in self.constants and len(self.shapes.get(name, ())) == 4

    # ---------------------------------------------------------------- the backward pass

    def expanded(self, layer: str, channel: int, source: str | None = None) -> dict[str, Window]:
        """∂ layer[channel] at its grid's centre / ∂ each source, rectifiers as the identity: source → Window."""
        plan = self.plan(layer, source)
        _, channels, height, width = self.shapes[layer]
        if not 0 <= channel < channels:
            raise Invalid(f"layer {layer!r} has {channels} channels; channel {channel} is out of range",
                          code="channel_out_of_range")
        start = np.zeros((channels, 1, 1), np.float32)
        start[channel] = 1.0
        grads = {layer: Window(start, height // 2, width // 2)}
        stops = set(plan.sources)
        for node in plan.nodes:
            outs = [grads.pop(o, None) if o not in stops else None for o in node.output]
            if all(g is None for g in outs):
                continue
            for name, window in self._back(node, outs):
                if window is None or name not in self.shapes:
                    continue
                _, _, h, w = self.shapes[name]
                window = window.clipped(h, w)
                grads[name] = grads[name].plus(window) if name in grads else window
        return {name: grads[name] for name in plan.sources if name in grads}

    def _back(self, node: onnx.NodeProto, outs: list[Window | None]) -> list[tuple[str, Window | None]]:
        """(input name, gradient) for each data input of `node`, given its outputs' gradients."""
        op, g = node.op_type, outs[0]
        data = [name for name in node.input if name and self._data(name)]
        if op in PASS:
            return [(node.input[0], g)]
        if op == "Conv":
            return [(node.input[0], self._conv(node, g))]
        if op == "BatchNormalization":
            scale, _, _, var = (self._constant(n) for n in node.input[1:5])
            if scale is None or var is None:
                raise CircuitUnsupported(f"the statistics of BatchNormalization {node.name or node.output[0]!r} "
                                         "are not constants")
            factor = scale / np.sqrt(var + float(graph.node_attrs(node).get("epsilon", 1e-5)))
            return [(node.input[0], Window(g.values * factor[:, None, None].astype(np.float32), g.top, g.left))]
        if op in ("Add", "Sum", "Sub"):
            for name in data:
                if self.shapes[name] != self.shapes[node.output[0]]:
                    raise CircuitUnsupported(f"{op} {node.name or node.output[0]!r} broadcasts a tensor of shape "
                                             f"{list(self.shapes[name])}: not a sum of feature maps")
            return [(name, g if op != "Sub" or name == node.input[0] else Window(-g.values, g.top, g.left))
                    for name in data]
        if op in ("Mul", "Div") and len(data) == 1 and (op == "Mul" or node.input[0] == data[0]):
            return [(data[0], self._scaled(node, g, data[0]))]
        if op in ("AveragePool", "MaxPool"):
            return [(node.input[0], self._pool(node, g))]
        if op == "Pad":
            return [(node.input[0], self._pad(node, g))]
        if op == "Concat" and int(graph.node_attrs(node)["axis"]) in (1, -3):
            return self._concat(node, g)
        if op == "Split" and int(graph.node_attrs(node).get("axis", 0)) in (1, -3):
            return [(node.input[0], self._split(node, outs))]
        raise CircuitUnsupported(f"op {op} ({node.name or node.output[0]!r}) is not linear with rectifiers taken as "
                                 "the identity; name a later `source` layer")

    def _conv(self, node: onnx.NodeProto, g: Window) -> Window:
        """The transpose of a convolution on a window: input[i, y·s − p + u·d] += W[o, i, u] · g[o, y]."""
        attrs = graph.node_attrs(node)
        weights = self._constant(node.input[1])
        if weights is None:
            raise CircuitUnsupported(f"the weights of Conv {node.name or node.output[0]!r} are not constants")
        out_ch, in_per_group, kh, kw = weights.shape
        groups = int(attrs.get("group", 1))
        (sy, sx), (dy, dx) = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
        pad_top, pad_left = graph.window_pads(attrs, self.shapes.get(node.input[0], ())[2:], (kh, kw), (sy, sx), (dy, dx))
        values = g.values
        _, h, w = values.shape
        hin, win = (h - 1) * sy + (kh - 1) * dy + 1, (w - 1) * sx + (kw - 1) * dx + 1
        out = np.zeros((groups, in_per_group, hin, win), np.float32)
        per_group = values.reshape(groups, out_ch // groups, h, w)
        kernel = weights.reshape(groups, out_ch // groups, in_per_group, kh, kw)
        for u in range(kh):
            for v in range(kw):
                out[:, :, u * dy:u * dy + (h - 1) * sy + 1:sy, v * dx:v * dx + (w - 1) * sx + 1:sx] += np.einsum(
                    "goyx,goi->giyx", per_group, kernel[:, :, :, u, v])
        return Window(out.reshape(groups * in_per_group, hin, win), g.top * sy - pad_top, g.left * sx - pad_left)

    def _scaled(self, node: onnx.NodeProto, g: Window, data: str) -> Window:
        other = next(n for n in node.input if n != data)
        factor = self._constant(other)
        if factor is None:
            raise CircuitUnsupported(f"{node.op_type} {node.name or node.output[0]!r} multiplies two feature maps "
                                     "(a gate): not linear")
        if node.op_type == "Div":
            factor = 1.0 / factor
        if factor.size == 1:
            factor = factor.reshape(())
        elif factor.ndim in (3, 4) and factor.shape[-2:] == (1, 1) and factor.size == factor.shape[-3]:
            factor = factor.reshape(-1, 1, 1)
        else:
            raise CircuitUnsupported(f"{node.op_type} {node.name or node.output[0]!r} scales positions unevenly")
        return Window(g.values * factor, g.top, g.left)

    def _pool(self, node: onnx.NodeProto, g: Window) -> Window:
        """Average pooling's transpose (max pooling taken as the average of its window): each output position
        spreads its gradient evenly over the inputs of its window that lie inside the grid (ONNX's default
        `count_include_pad` 0) or over the whole window (`count_include_pad` 1)."""
        attrs = graph.node_attrs(node)
        kh, kw = attrs["kernel_shape"][-2:]
        sy, sx = attrs.get("strides", [1, 1])[-2:]
        dy, dx = attrs.get("dilations", [1, 1])[-2:]
        _, _, height, width = self.shapes[node.input[0]]
        pad_top, pad_left = graph.window_pads(attrs, (height, width), (kh, kw), (sy, sx), (dy, dx))
        channels, h, w = g.values.shape
        out = np.zeros((channels, (h - 1) * sy + (kh - 1) * dy + 1, (w - 1) * sx + (kw - 1) * dx + 1), np.float32)
        top, left = g.top * sy - pad_top, g.left * sx - pad_left
        include_pad = node.op_type == "AveragePool" and int(attrs.get("count_include_pad", 0))
        for y in range(h):
            for x in range(w):
                rows = top + y * sy + np.arange(kh) * dy
                cols = left + x * sx + np.arange(kw) * dx
                inside = _inside(rows, cols, height, width)
                share = inside / (kh * kw if include_pad else max(int(inside.sum()), 1))
                out[:, y * sy:y * sy + (kh - 1) * dy + 1:dy, x * sx:x * sx + (kw - 1) * dx + 1:dx] += \
                    g.values[:, y, x, None, None] * share
        return Window(out, top, left)

    def _pad(self, node: onnx.NodeProto, g: Window) -> Window:
        attrs = graph.node_attrs(node)
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        def value(name: str) -> np.ndarray | None:
            return self.constants.get(name, self.small.get(name))
        if attrs.get("pads") is None and value(node.input[1]) is None:
            raise CircuitUnsupported(f"the pad amounts of {node.name or node.output[0]!r} are unknown")
        begin, end = graph.pad_amounts(node, attrs, value)
        if mode != "constant" or begin.get(0, 0) or begin.get(1, 0) or end.get(0, 0) or end.get(1, 0):
            raise CircuitUnsupported(f"Pad {node.name or node.output[0]!r} ({mode}) is not a zero border")
        return Window(g.values, g.top - begin.get(2, 0), g.left - begin.get(3, 0))

    def _concat(self, node: onnx.NodeProto, g: Window) -> list[tuple[str, Window]]:
        out, start = [], 0
        for name in node.input:
            channels = self.shapes[name][1]
            if self._data(name):
                out.append((name, Window(g.values[start:start + channels], g.top, g.left)))
            start += channels
        return out

    def _split(self, node: onnx.NodeProto, outs: list[Window | None]) -> Window | None:
        parts = []
        for name, window in zip(node.output, outs):
            parts.append((self.shapes[name][1], window))
        top, left, bottom, right = _union_box([w for _, w in parts if w is not None])
        blocks = []
        for channels, window in parts:
            block = np.zeros((channels, bottom - top, right - left), np.float32)
            if window is not None:
                y, x = window.top - top, window.left - left
                block[:, y:y + window.values.shape[1], x:x + window.values.shape[2]] = window.values
            blocks.append(block)
        return Window(np.concatenate(blocks), top, left)


# ---------------------------------------------------------------- the answer


@dataclass(frozen=True)
class Input:
    """One input unit of a circuit: its layer and channel, its signed window (kh×kw), the window's sum and L2
    norm, and where the window's top-left lies on the source layer's grid."""

    layer: str
    channel: int
    weights: np.ndarray
    origin: tuple[int, int]

    @property
    def weight(self) -> float:
        return float(self.weights.sum())

    @property
    def norm(self) -> float:
        return float(np.sqrt((self.weights.astype(np.float64) ** 2).sum()))


def strongest(windows: dict[str, Window], k: int) -> list[Input]:
    """The `k` input units with the largest L2 norm of their window, over every source (ties: source order,
    then channel)."""
    units = []
    for layer, window in windows.items():
        norms = np.sqrt((window.values.astype(np.float64) ** 2).sum(axis=(1, 2)))
        for channel in np.argsort(-norms, kind="stable")[:k]:
            units.append((float(norms[channel]), layer, int(channel), window))
    units.sort(key=lambda u: -u[0])  # stable: sources in order, channels ascending among equal norms
    return [Input(layer, channel, window.values[channel], (window.top, window.left))
            for _, layer, channel, window in units[:k]]


def picture(inputs: list[Input], cell: int = 8, gap: int = 3) -> np.ndarray:
    """The input units' windows side by side (strongest first), each weight a `cell`-pixel square coloured by
    sign on one scale for all: red positive, blue negative, white zero. H×W×3 uint8."""
    if not inputs:
        return np.full((cell + 2 * gap, cell + 2 * gap, 3), 255, np.uint8)
    scale = max(float(np.abs(i.weights).max()) for i in inputs) or 1.0
    kh = max(i.weights.shape[0] for i in inputs)
    kw = max(i.weights.shape[1] for i in inputs)
    side = max(cell, 24 // max(kh, kw))
    canvas = np.full((kh * side + 2 * gap, len(inputs) * (kw * side + gap) + gap, 3), 255, np.uint8)
    for n, unit in enumerate(inputs):
        level = np.clip(unit.weights / scale, -1, 1)
        tile = np.full(level.shape + (3,), 255.0)
        tile[..., 1] -= 255 * np.abs(level)  # red and blue stay where the sign says, green goes with magnitude
        tile[..., 2] -= 255 * np.clip(level, 0, None)
        tile[..., 0] -= 255 * np.clip(-level, 0, None)
        tile = np.repeat(np.repeat(tile, side, axis=0), side, axis=1).round().astype(np.uint8)
        left = gap + n * (kw * side + gap)
        canvas[gap:gap + tile.shape[0], left:left + tile.shape[1]] = tile
    return canvas
