"""Timing shared by the benchmarks: two calls timed alternately, so that load from elsewhere (or a shared
VM's drifting speed) falls on both alike; and a lean HTTP client, so that the figures are the service's
(on a 2-core machine the client shares the cores with the server, and httpx costs about 1 ms a request)."""

from __future__ import annotations

import http.client
import json
import statistics
import time
import uuid


def alternate_ms(first, second, repeats: int, block: int = 1) -> tuple[float, float]:
    """(median ms of `first`, median ms of `second`), each called `repeats` times, the two taking turns in blocks
    of `block` calls; the first call of each block is a warm-up, not timed (with `block` > 1, each side then runs
    warm, as it would serving requests back to back, while drift still falls on both)."""
    times: tuple[list, list] = ([], [])
    if block == 1:
        first(), second()
    while len(times[0]) < repeats:
        for fn, bucket in ((first, times[0]), (second, times[1])):
            if block > 1:
                fn()
            for _ in range(min(block, repeats - len(bucket))):
                start = time.perf_counter()
                fn()
                bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


class Lean:
    """A keep-alive HTTP/1.1 client on `http.client`: JSON or multipart POSTs and GETs, whole answers read."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port)

    def _call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        try:
            self.connection.request(method, path, body, headers or {})
            response = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the connection while it idled (uvicorn: after 5 s) and never read this request.
            self.connection.close()
            self.connection.request(method, path, body, headers or {})
            response = self.connection.getresponse()
        return response.status, response.read()

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
