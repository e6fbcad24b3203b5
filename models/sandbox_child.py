"""The child side of the analysis sandbox (`python -m models.sandbox_child`, started by `models.sandbox`).

It caps its own address space and CPU time and isolates itself (`models.isolation`: no network, nobody where it
can) before importing anything heavy, reads the model from stdin, runs `models.analysis.analyse` (the probe, the
torch twin, the equivalence check) and writes one JSON line to its original stdout, with what isolation the
platform gave. Only this process ever imports torch for an upload: the API process that starts it does not.
With `"check": true` in its config it reads no model and reports what it can reach instead (`check`).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import sys
import sysconfig

from models.isolation import isolate  # standard library only: nothing of numpy, onnx or torch before isolating


def _child(config: dict) -> int:
    """Child side: cap resources, isolate, read the model from stdin, write one JSON line to the real stdout."""
    memory = int(config["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(config["time_s"] * max(config["threads"], 1)) + 10
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    paths = sysconfig.get_paths()
    isolation = isolate([paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"], os.getcwd()])
    result_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the result
    logging.basicConfig(level="INFO", stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    if config.get("check"):
        return _reply(result_fd, {"ok": True, "check": check(), "isolation": isolation.as_dict()})
    data = sys.stdin.buffer.read()
    from models.validate import Limits, ModelRejected

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
    reply["isolation"] = isolation.as_dict()
    return _reply(result_fd, reply)


def _reply(fd: int, reply: dict) -> int:
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(reply) + "\n")
    return 0


def check(host: str = "127.0.0.1", port: int = 6379) -> dict:
    """What this process sees once isolated: its user, its environment's names, and whether it can open a TCP
    connection to `host:port` (the default Redis)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            reached = "connected"
    except OSError as exc:
        reached = f"refused: {exc}"
    return {"uid": os.getuid(), "environment": sorted(os.environ), f"tcp {host}:{port}": reached}


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
