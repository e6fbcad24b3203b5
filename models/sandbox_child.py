"""The child side of the analysis sandbox (`python -m models.sandbox_child`, started by `models.sandbox`).

It caps its own address space and CPU time before importing anything heavy, reads the model from
stdin, runs `models.analysis.analyse` (the probe, the torch twin, the equivalence check) and writes
one JSON line to its original stdout. Only this process ever imports torch for an upload: the API
process that starts it does not.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys

from models.validate import Limits, ModelRejected


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the API that started it dies (no orphaned analyses)."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def _child(config: dict) -> int:
    """Child side: cap resources, read the model from stdin, write one JSON line to the real stdout."""
    _die_with_parent()
    memory = int(config["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(config["time_s"] * max(config["threads"], 1)) + 10
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    result_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the result
    logging.basicConfig(level="INFO", stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    data = sys.stdin.buffer.read()
    try:
        from models.analysis import analyse as run_analysis  # after the limits are set

        size = tuple(config["input_size"]) if config["input_size"] else None
        reply = {"ok": True, "analysis": run_analysis(data, Limits(**config["limits"]), size, int(config["threads"]))}
    except ModelRejected as exc:
        reply = {"ok": False, "error": exc.as_dict()}
    except MemoryError:
        reply = {"ok": False, "error": {"code": "analysis_out_of_resources", "message": (
            f"analysing the model needed more than {memory // 2 ** 20} MiB of memory")}}
    except Exception as exc:  # a bug or an odd model: tell the user, keep the traceback in the log
        logging.getLogger(__name__).exception("analysis failed")
        text = " ".join(str(exc).split())[:300]
        if "allocate" in text.lower() or "bad_alloc" in text:
            reply = {"ok": False, "error": {"code": "analysis_out_of_resources", "message": (
                f"analysing the model needed more than {memory // 2 ** 20} MiB of memory: {text}")}}
        else:
            reply = {"ok": False, "error": {"code": "analysis_failed",
                                            "message": f"the model could not be analysed: {text}"}}
    with os.fdopen(result_fd, "w") as out:
        out.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
