"""Timing shared by the benchmarks: calls timed in turns, so that load from elsewhere (or a shared
VM's drifting speed) falls on all alike; and a lean HTTP client, so that the figures are the service's
(on a 2-core machine the client shares the cores with the server, and httpx costs about 1 ms a request). Also the
small helpers every bench that starts its own service needs: a spare port, waiting for `/readyz`, percentiles."""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
import uuid

import httpx
import numpy as np


def alternate_ms(calls, repeats: int, block: int = 1) -> tuple[float, ...]:
    """The median ms of each of `calls`, each called `repeats` times, all taking turns in blocks of `block` calls;
    the first call of each block is a warm-up, not timed (with `block` > 1, each side then runs warm, as it would
    serving requests back to back, while drift still falls on all of them)."""
    times: list[list[float]] = [[] for _ in calls]
    if block == 1:
        for fn in calls:
            fn()
    while len(times[0]) < repeats:
        for fn, bucket in zip(calls, times):
            if block > 1:
                fn()
            for _ in range(min(block, repeats - len(bucket))):
                start = time.perf_counter()
                fn()
                bucket.append(time.perf_counter() - start)
    return tuple(statistics.median(bucket) * 1000 for bucket in times)


class Lean:
    """A keep-alive HTTP/1.1 client on a plain socket: JSON or multipart POSTs and GETs, whole answers read.
    `http.client` parses a response's headers through the `email` package: 60-150 µs a call here, counted in
    every figure it times; this reads the status line, `Content-Length` (or a chunked body) and nothing else."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = bytearray()  # received, not yet read: grows in place (an artifact of 600 KB comes in many recvs)

    def _connect(self) -> socket.socket:
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, bytearray()

    def _receive(self, n: int) -> None:
        """More bytes from the socket into the buffer (at least one); ConnectionResetError when the server has
        closed it."""
        chunk = self.sock.recv(max(n, 65536))
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self.buffer += chunk

    def _take(self, n: int, skip: int = 0) -> bytes:
        out = bytes(self.buffer[:n])
        del self.buffer[:n + skip]
        return out

    def _until(self, marker: bytes) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            self._receive(0)
        return self._take(end, len(marker))

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._receive(n - len(self.buffer))
        return self._take(n)

    def _response(self) -> tuple[int, bytes]:
        lines = self._until(b"\r\n\r\n").split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                parts.append(self._exactly(size))
                self._exactly(2)
            self._until(b"\r\n")  # no trailers are sent
            return status, b"".join(parts)
        return status, self._exactly(int(headers.get(b"content-length", b"0")))

    def _call(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        fresh = self.sock is None
        try:
            (self.sock or self._connect()).sendall(request)
            return self._response()
        except (BrokenPipeError, ConnectionResetError):
            if fresh:
                raise
            # The server closed the connection while it idled (uvicorn: after 5 s) and never read this request.
            self._connect().sendall(request)
            return self._response()

    def post(self, path: str, body: dict) -> tuple[int, bytes]:
        return self._call("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def post_multipart(self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[int, bytes]:
        """`fields`: name → text; `files`: name → (file name, bytes, media type)."""
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in fields.items()]
        for name, (filename, data, media) in files.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                         f"Content-Type: {media}\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self._call("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def get(self, path: str) -> tuple[int, bytes]:
        return self._call("GET", path)


def median_s(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls of `fn`, after one warm-up call (sessions built, caches filled)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def server_timing(header: str | None) -> dict[str, float]:
    """`queue;dur=0.2, decode;dur=0.5, …` → {phase: ms}."""
    phases = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";dur=")
        if rest:
            phases[name] = float(rest)
    return phases


def beyond_phases(client_ms: float, phases: dict[str, float]) -> tuple[float, float] | None:
    """A request's time besides its `Server-Timing` phases, from the answer's `total`: (other: in the API between
    the phases, outside: the client's wait outside the API: network, HTTP server, client), ms; None without a
    `total`."""
    if "total" not in phases:
        return None
    return phases["total"] - sum(ms for name, ms in phases.items() if name != "total"), client_ms - phases["total"]


# Positions in `proc_stat`'s fields (proc(5), counted from the state): the CPU time a process or thread spent in
# user and in system mode (its children's come next and are not counted here), and its niceness.
UTIME, STIME, NICE = 11, 12, 16


def proc_stat(path: str) -> list[bytes]:
    """The fields of a /proc `stat` file (a process's or a thread's) after the command name, which may itself hold
    spaces and parentheses; OSError when the process or thread is gone."""
    with open(path, "rb") as f:
        return f.read().rpartition(b")")[2].split()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system, s) that process `pid` has used so far: (its main thread's, all its threads'). In
    the API the main thread is the event loop (HTTP, routing, validation, the hops to and from a thread, the
    answer); the others run the views' work and ONNX Runtime's pools. Linux (/proc); (NaN, NaN) elsewhere or once
    the process is gone. Threads that ended are counted in the process's own figure, not in any thread's."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        main, whole = proc_stat(f"/proc/{pid}/task/{pid}/stat"), proc_stat(f"/proc/{pid}/stat")
    except OSError:
        return float("nan"), float("nan")
    return (int(main[UTIME]) + int(main[STIME])) / tick, (int(whole[UTIME]) + int(whole[STIME])) / tick


def pct(values: list[float], q: float) -> float:
    """The `q`th percentile of `values` (NaN when there are none)."""
    return float(np.percentile(values, q)) if values else float("nan")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (for a service the bench starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 300) -> tuple[float, float]:
    """Wait until `{url}/readyz` is 200: (seconds until it first answered, any status; seconds until it was 200).
    TimeoutError when it is not 200 within `timeout` seconds."""
    start, answered = time.perf_counter(), None
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.perf_counter() - start < timeout:
            try:
                if client.get("/readyz").status_code == 200:
                    return (answered or time.perf_counter()) - start, time.perf_counter() - start
                answered = answered or time.perf_counter()
            except httpx.TransportError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"{url}/readyz not 200 after {timeout} s")
