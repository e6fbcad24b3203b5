"""Run the analysis of an untrusted model in a child process with a memory cap and a time limit.

An ONNX file can be a bomb that passes every static check (a `ConstantOfShape` computed to ask
for gigabytes, a long chain of nodes). The probe run, the torch conversion and the equivalence
check therefore run in `python -m models.sandbox_child`: the child caps its own address space
(`RLIMIT_AS`) and CPU time (`RLIMIT_CPU`) and isolates itself (`models.isolation`: its own empty network
namespace, `socket()` limited to AF_UNIX by seccomp, `nobody` when started as root, each where the platform
allows) before it imports anything heavy, reads the model from stdin and writes one JSON line to its original
stdout. It inherits no environment but `ENVIRONMENT` (no keys, storage credentials or Redis URL) and no file
descriptors but its pipes. The parent kills its whole process group when the wall-clock limit passes. Any way
the child fails becomes a `ModelRejected` (422): only a model that passed is ever loaded into a long-lived
process. `python -m models.sandbox` prints what isolation this machine gives.
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
ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")  # what the child keeps of the parent's


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
    child = _start(config, sandbox)
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


def child_environment(threads: int) -> dict[str, str]:
    """The child's whole environment: `ENVIRONMENT` from this process's, and what the child needs to run."""
    env = {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}
    count = str(threads)
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS=count, MKL_NUM_THREADS=count, OPENBLAS_NUM_THREADS=count,
               PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1")
    return env


def _start(config: dict, sandbox: SandboxLimits) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "models.sandbox_child", json.dumps(config)], cwd=ROOT,
                            env=child_environment(sandbox.threads), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, close_fds=True)


def check(sandbox: SandboxLimits = SandboxLimits()) -> dict:
    """What an isolated child sees on this machine: its isolation steps, user, environment names, and whether it
    reaches 127.0.0.1:6379 (`models.sandbox_child.check`)."""
    config = {"check": True, "memory_bytes": sandbox.memory_bytes, "time_s": sandbox.time_s, "threads": 1}
    child = _start(config, sandbox)
    try:
        out, err = child.communicate(b"", timeout=sandbox.time_s)
    finally:
        _kill(child)
    reply = json.loads(out.decode().strip().splitlines()[-1])
    return {**reply["check"], "isolation": reply["isolation"]}


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
    if isinstance(result, dict) and "isolation" in result:
        log.info("model analysed in the sandbox", extra={"fields": {"isolation": result["isolation"]}})
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


if __name__ == "__main__":
    print(json.dumps(check(), indent=2))
