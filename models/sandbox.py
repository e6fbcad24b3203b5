"""Run the analysis of an untrusted model in a child process with a memory cap and a time limit.

An ONNX file can be a bomb that passes every static check (a `ConstantOfShape` computed to ask
for gigabytes, a long chain of nodes). The probe run, the torch conversion and the equivalence
check therefore run in `python -m models.sandbox_child`: the child caps its own address space
(`RLIMIT_AS`) and CPU time (`RLIMIT_CPU`) before it imports anything heavy, reads the model from
stdin and writes one JSON line to its original stdout. The parent kills its whole process group
when the wall-clock limit passes. Any way the child fails becomes a `ModelRejected` (422): only
a model that passed is ever loaded into a long-lived process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from models.validate import Limits, ModelRejected

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SandboxLimits:
    """Resources of one analysis: address space (bytes), wall-clock time (s), CPU threads."""

    memory_bytes: int = 8 * 1024 ** 3
    time_s: float = 180.0
    threads: int = 1


def analyse(data: bytes, limits: Limits = Limits(), sandbox: SandboxLimits = SandboxLimits(),
            input_size: tuple[int, int] | None = None) -> dict:
    """`models.analysis.analyse` in a capped child process; raises `ModelRejected` on any failure."""
    config = {"limits": asdict(limits), "memory_bytes": sandbox.memory_bytes, "time_s": sandbox.time_s,
              "threads": sandbox.threads, "input_size": list(input_size) if input_size else None}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVSCOPE_", "REDIS"))}
    threads = str(sandbox.threads)
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-m", "models.sandbox_child", json.dumps(config)], cwd=ROOT, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        out, err = child.communicate(data, timeout=sandbox.time_s)
    except subprocess.TimeoutExpired:
        _kill(child)
        child.communicate()
        raise ModelRejected("analysis_timeout", f"analysing the model took longer than {sandbox.time_s:g} s; "
                            "convscope accepts models it can probe within that time") from None
    except BaseException:
        _kill(child)
        raise
    return _result(child.returncode, out, err, sandbox)


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _result(returncode: int, out: bytes, err: bytes, sandbox: SandboxLimits) -> dict:
    tail = err.decode(errors="replace")[-2000:]
    line = out.decode(errors="replace").strip().splitlines()[-1:] if out else []
    try:
        result = json.loads(line[0]) if line else None
    except ValueError:
        result = None
    if isinstance(result, dict) and result.get("ok"):
        return result["analysis"]
    if isinstance(result, dict) and "error" in result:
        error = result["error"]
        if error.get("code") in ("analysis_failed",):
            log.warning("model analysis failed: %s", tail)
        raise ModelRejected(error["code"], error["message"], error.get("details"), error.get("status", 422))
    log.warning("model analysis child exited with %s: %s", returncode, tail)
    if returncode in (-signal.SIGKILL, -signal.SIGXCPU) or "bad_alloc" in tail or "MemoryError" in tail:
        raise ModelRejected("analysis_out_of_resources", "analysing the model needed more than "
                            f"{sandbox.memory_bytes // 2 ** 20} MiB of memory or its CPU time limit")
    raise ModelRejected("analysis_failed", f"the model could not be analysed (the probe process exited with "
                        f"status {returncode}); it may ask for more memory than the limit of "
                        f"{sandbox.memory_bytes // 2 ** 20} MiB")
