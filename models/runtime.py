"""ONNX Runtime sessions: the execution provider chosen at run time, thread counts from settings.

Sessions are built without ONNX Runtime's CPU memory arena, so that the memory of a session that is
dropped goes back to the allocator (an arena keeps its high-water mark for the process's life); on
CUDA the arena grows only by what is asked for (`kSameAsRequested`). Large models are loaded from a
file path (`session_from_file`): ONNX Runtime then parses them with the GIL released, where building
from bytes — or parsing and re-serialising the protobuf in Python to add outputs — holds it for as long
as a large file takes to parse, and stalls every other thread of the API meanwhile. Intermediate
outputs are added to a file by rewriting only the graph's output list (`with_outputs`), not its weights.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import mmap
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnxruntime as ort

log = logging.getLogger(__name__)


@functools.cache
def gpu_present() -> bool:
    """True when the CUDA driver loads and reports at least one device (no error spam otherwise)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def providers(setting: str = "auto") -> list[str]:
    """Execution providers in order of preference: CUDA first when a GPU is here, then CPU."""
    available = ort.get_available_providers()
    if setting != "auto":
        wanted = [p.strip() for p in setting.split(",") if p.strip()]
        return [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    if gpu_present() and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _options(intra_threads: int, inter_threads: int, allow_spinning: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = inter_threads
    if not allow_spinning:  # idle pool threads sleep instead of spinning: cores stay free for the process's Python
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    else:  # they spin between the ops of a run, not on after it: an idle session leaves the cores alone
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False  # freed memory goes back to the allocator, not a per-session pool
    return options


def _provider_options(names: list[str]) -> list:
    """CUDA: grow the device arena only by what is asked for, so one large model does not claim the rest."""
    return [(n, {"arena_extend_strategy": "kSameAsRequested"}) if n == "CUDAExecutionProvider" else n for n in names]


def session_from_file(path: Path, *, extra_outputs: list[str] = (), intra_threads: int = 1, inter_threads: int = 1,
                      provider_setting: str = "auto", allow_spinning: bool = True) -> ort.InferenceSession:
    """An inference session of the ONNX file at `path` (parsed by ONNX Runtime with the GIL released);
    `extra_outputs` are intermediate tensors made reachable as outputs, through a rewritten copy."""
    options = _options(intra_threads, inter_threads, allow_spinning)
    chosen = _provider_options(providers(provider_setting))
    if not extra_outputs:
        return ort.InferenceSession(str(path), options, providers=chosen)
    with scratch_onnx("convscope-outputs-") as tmp:
        with_outputs(Path(path), list(extra_outputs), tmp)
        return ort.InferenceSession(str(tmp), options, providers=chosen)


@contextlib.contextmanager
def scratch_onnx(prefix: str) -> Iterator[Path]:
    """The path of a new empty temporary `.onnx` file named `<prefix>…`, deleted when the block ends."""
    fd, tmp = tempfile.mkstemp(suffix=".onnx", prefix=prefix)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        os.unlink(tmp)


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf, start: int, end: int):
    """(field number, wire type, value start, value end) of each field of the protobuf message buf[start:end]."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, after = _varint(buf, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, pos, after
        pos = after


_MODEL_GRAPH, _GRAPH_OUTPUT, _VALUE_NAME = 7, 12, 1


def single_graph(buf) -> tuple[int, int, int]:
    """(tag start, start, end) of the one `graph` field of the serialised ModelProto in `buf`; ValueError otherwise."""
    graphs = [(tag_start, s, e) for tag_start, (n, w, s, e) in _with_starts(buf, 0, len(buf))
              if n == _MODEL_GRAPH and w == 2]
    if len(graphs) != 1:
        raise ValueError("the model has no single graph")
    return graphs[0]


def with_outputs(src: Path, names: list[str], dst: Path) -> None:
    """Copy the ONNX file `src` to `dst` with `names` appended to its graph's outputs (those not outputs
    already). Only the graph's length prefix and output list are rewritten: the weights are copied as bytes,
    never parsed (protobuf concatenates repeated fields, so appended `output` entries extend the list)."""
    with open(src, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        tag_start, g_start, g_end = single_graph(buf)
        known = set()
        for n, w, s, e in _fields(buf, g_start, g_end):
            if n == _GRAPH_OUTPUT and w == 2:
                known.update(bytes(buf[vs:ve]).decode() for vn, vw, vs, ve in _fields(buf, s, e)
                             if vn == _VALUE_NAME and vw == 2)
        extra = bytearray()
        for name in dict.fromkeys(names):
            if name in known:
                continue
            encoded = name.encode()
            value = bytes([(_VALUE_NAME << 3) | 2]) + _encode_varint(len(encoded)) + encoded
            extra += bytes([(_GRAPH_OUTPUT << 3) | 2]) + _encode_varint(len(value)) + value
        with open(dst, "wb") as out:
            out.write(buf[:tag_start])
            out.write(bytes([(_MODEL_GRAPH << 3) | 2]) + _encode_varint(g_end - g_start + len(extra)))
            view = memoryview(buf)
            try:
                out.write(view[g_start:g_end])
                out.write(extra)
                out.write(view[g_end:])
            finally:
                view.release()


def _with_starts(buf, start: int, end: int):
    """Like `_fields`, each with the offset of its tag: (tag offset, (number, wire, value start, value end))."""
    pos = start
    for field in _fields(buf, start, end):
        yield pos, field
        pos = field[3]


def session(
    model: onnx.ModelProto | bytes,
    *,
    extra_outputs: list[str] = (),
    intra_threads: int = 1,
    inter_threads: int = 1,
    provider_setting: str = "auto",
) -> ort.InferenceSession:
    """An inference session; `extra_outputs` are intermediate tensors made reachable as outputs."""
    if extra_outputs:
        proto = onnx.ModelProto()
        proto.ParseFromString(model) if isinstance(model, bytes) else proto.CopyFrom(model)
        known = {o.name for o in proto.graph.output}
        proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra_outputs if n not in known)
        model = proto
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, _options(intra_threads, inter_threads),
                                providers=_provider_options(providers(provider_setting)))
