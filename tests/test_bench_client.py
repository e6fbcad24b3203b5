"""The benches' lean HTTP client (`bench/timing.Lean`) reads what a server sends: bodies by Content-Length or
chunked, several answers on one keep-alive connection, and a new connection when the server closed the old one
while it idled."""

from __future__ import annotations

import http.server
import threading

import pytest

from bench.timing import Lean


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello, ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = b"x" * 300_000 if self.path == "/big" else b"not here"
        self.send_response(200 if self.path == "/big" else 404)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = self.headers["Content-Type"].encode() + b"|" + body
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_answers_by_length_and_chunked_on_one_connection(server):
    client = Lean(server)
    assert client.get("/big") == (200, b"x" * 300_000)
    first = client.sock
    assert client.get("/chunked") == (200, b"hello, chunked world")
    assert client.get("/missing") == (404, b"not here")
    assert client.post("/echo", {"a": 1}) == (201, b'application/json|{"a": 1}')
    status, answer = client.post_multipart("/form", {"spec": "{}"}, {"file": ("a.png", b"\x89PNG", "image/png")})
    assert status == 201 and answer.startswith(b"multipart/form-data; boundary=") and b"\x89PNG" in answer
    assert client.sock is first  # every answer read whole: the connection was kept


def test_a_connection_the_server_closed_is_opened_again(server):
    client = Lean(server)
    assert client.get("/close") == (404, b"not here")  # the server closes after this answer
    first = client.sock
    assert client.get("/big")[0] == 200
    assert client.sock is not first
    client.close()


def test_beyond_phases_splits_a_wait_by_the_servers_total():
    from bench.timing import beyond_phases

    phases = {"queue": 0.3, "decode": 0.1, "forward": 4.0, "encode": 0.1, "total": 5.0}
    assert beyond_phases(7.0, phases) == pytest.approx((0.5, 2.0))  # (in the API between its phases, outside it)
    assert beyond_phases(7.0, {"queue": 0.3, "forward": 4.0}) is None  # an answer without its total


def test_cpu_seconds_tells_the_main_threads_time_from_the_others():
    """Work on another thread counts for the process, not for its main thread (the API's event loop)."""
    import math
    import os
    import sys
    import threading
    import time

    from bench.timing import cpu_seconds

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")

    def busy(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    main0, whole0 = cpu_seconds(os.getpid())
    worker = threading.Thread(target=busy, args=(0.4,))
    worker.start()
    worker.join()
    main1, whole1 = cpu_seconds(os.getpid())
    busy(0.3)
    main2, whole2 = cpu_seconds(os.getpid())
    assert whole1 - whole0 >= 0.3 and main1 - main0 < 0.1  # the ended thread's time stays in the process's
    assert main2 - main1 >= 0.2 and whole2 - whole1 >= 0.2
    assert all(math.isnan(v) for v in cpu_seconds(2 ** 22 + 7))  # above any pid Linux gives: no such process


def test_alternate_ms_gives_each_call_its_turns_and_its_own_median():
    """Every call takes its turn in blocks (a warm-up first, not timed), and each median is its own call's."""
    import time

    from bench.timing import alternate_ms

    order: list[str] = []

    def call(name: str, seconds: float):
        def run() -> None:
            order.append(name)
            time.sleep(seconds)
        return run
    fast, slow, slowest = alternate_ms((call("a", 0), call("b", 0.004), call("c", 0.012)), repeats=3, block=2)
    assert "".join(order) == "aaabbbcccaabbcc"  # a warm-up and two timed calls each, then a warm-up and the last
    assert fast < 2 < slow < 10 < slowest
