"""ONNX Runtime sessions: the execution provider chosen at run time, thread counts from settings."""

from __future__ import annotations

import ctypes
import functools
import logging

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
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = inter_threads
    options.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=providers(provider_setting))
