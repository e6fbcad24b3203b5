"""Real-browser fixtures: the real service (uvicorn) and one real worker, Debian's chromium through Playwright.

- `live` (session): `python -m uvicorn service.app:create_app --factory` on a free port of 127.0.0.1 and one
  `python -m workers`, on a Redis prefix and queue of their own, with API keys on (`live.key`) and CORS
  allowing `live.origin_url`, a second origin (another port) that serves `tests/browser/cross_origin/`.
- `browser` (session): chromium from the system (`CONVSCOPE_CHROMIUM`, else `chromium` on PATH), headless.
- `page` (per test): a fresh 1280×800 context and page that fail the test at teardown on any console error,
  uncaught page error, failed request or answer with status >= 400, except those the test declared with
  `page.expect_failures(...)`; an EventSource the page closes (its stream aborted) is not a problem.
- `explorer` (per test): `page` opened on `/ui/` with the API key typed into the page's key field
  (`open_explorer(page, live, key=None)` does the same for a page of your own).
- `shot(page, name)`: a screenshot saved as `docs/ui/<name>.png`.

Playwright's own browser download is not reachable from these machines: the set-up installs Debian's
chromium (`EXTRAS=test scripts/setup.sh`), and it is launched by its path.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from core.settings import Settings
from tests.conftest import BUILTIN_DATA, REDIS_URL, ROOT, encode, sample
from tests.jobs.conftest import running_service

MODEL = "efficientnet-lite0"
SCREENSHOTS = ROOT / "docs" / "ui"
CROSS_ORIGIN_FILES = Path(__file__).parent / "cross_origin"
VIEWPORT = {"width": 1280, "height": 800}
START_TIMEOUT_S = 90
# The worker's settings beyond Workers.env's (which keeps CONVSCOPE_WORKER_WARM_UP false: no umap warm-up;
# add CONVSCOPE_WORKER_WARM_UP="true" here if a test runs a umap embedding or activation atlas).
WORKER_ENV = {"CONVSCOPE_WORKER_TORCH_THREADS": "1"}


# The second origin: a static file server on another port.
class QuietHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript"}

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@dataclass
class OriginServer:
    """Files from `root` on http://127.0.0.1:<port>, in a thread."""

    root: Path
    httpd: ThreadingHTTPServer = field(init=False)

    def __post_init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(self.root)))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, name="cross-origin-server", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def origin_server(tmp_path_factory) -> OriginServer:
    """The cross-origin test pages (tests/browser/cross_origin/) and a sample photo, `cat.png`."""
    root = tmp_path_factory.mktemp("cross-origin")
    shutil.copytree(CROSS_ORIGIN_FILES, root, dirs_exist_ok=True)
    (root / "cat.png").write_bytes(encode(sample("chelsea")))
    server = OriginServer(root)
    yield server
    server.close()


# The live service.
@dataclass
class Live:
    """The running service: `url` (no trailing slash), the API `key` (tenant `explorer`), its `settings`,
    `origin_url` (the allowed cross-origin page server), the logs of the API and of the worker."""

    url: str
    key: str
    settings: Settings
    origin_url: str
    server_log: Path
    worker_log: Path
    server: subprocess.Popen
    worker: subprocess.Popen

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, **options) -> httpx.Client:
        """An httpx client on the service with the key (`with live.client() as http: ...`)."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60, **options)

    def logs(self, lines: int = 60) -> str:
        """The tails of both logs, for assertion messages."""
        return "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                         for path in (self.server_log, self.worker_log) if path.exists())


@pytest.fixture(scope="session")
def live(builtin_store, origin_server, tmp_path_factory) -> Live:
    """The real service and one real worker, with API keys and CORS on, for the whole session."""
    token = uuid.uuid4().hex[:8]
    key = secrets.token_urlsafe(24)
    settings = Settings(redis_url=REDIS_URL, redis_prefix=f"test-ui-{token}:", job_queue=f"test-ui-{token}",
                        data_dir=BUILTIN_DATA, api_keys=f"explorer:{key}", cors_origins=origin_server.url)
    logs = tmp_path_factory.mktemp("live-logs")
    with running_service(settings, logs, timeout=START_TIMEOUT_S, worker_env=WORKER_ENV,
                         CONVSCOPE_API_KEYS=settings.api_keys, CONVSCOPE_CORS_ORIGINS=settings.cors_origins) as service:
        worker = service.workers.processes[0]
        yield Live(url=service.url, key=key, settings=settings, origin_url=origin_server.url,
                   server_log=service.server_log, worker_log=service.workers.log_dir / f"{worker.worker_name}.log",
                   server=service.server, worker=worker)


# The browser.
def chromium_path() -> str | None:
    return os.environ.get("CONVSCOPE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven by Playwright (sync API)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if not path or not os.access(path, os.X_OK):
        pytest.fail("no chromium for the browser tests: run the set-up with the test extras "
                    "(`EXTRAS=test scripts/setup.sh`, which runs `apt-get install -y chromium`), "
                    "or set CONVSCOPE_CHROMIUM to a Chromium binary", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


# Watching a page for errors.
@dataclass(frozen=True)
class Problem:
    """Something that went wrong in the page: `kind` is "console" (a console error), "pageerror" (an uncaught
    exception), "requestfailed" (no answer: network error, blocked, aborted) or "response" (status >= 400)."""

    kind: str
    text: str
    url: str = ""
    status: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.status or ''} {self.url} {self.text}".replace("  ", " ").strip()


def failure_matcher(url: str | None = None, status: int | None = None, text: str | None = None,
                    kind: str | None = None) -> Callable[[Problem], bool]:
    """A predicate on a Problem: every criterion given must hold (`url` and `text` are substrings).

    A console error "Failed to load resource: ... status of 422" carries the resource's URL and status, so
    one `(url, status)` allowance covers both the response and the console line chromium prints for it."""

    def matches(problem: Problem) -> bool:
        return ((url is None or url in problem.url) and (status is None or problem.status == status)
                and (text is None or text in problem.text) and (kind is None or problem.kind == kind))

    return matches


class PageWatch:
    """Records a page's problems; `expect_failures` declares those a test provokes."""

    STATUS = re.compile(r"status of (\d{3})")

    def __init__(self):
        self.problems: list[Problem] = []
        self.allowed: list[Callable[[Problem], bool]] = []
        self._lock = threading.Lock()

    def attach(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self._add(Problem("pageerror", f"{error.name}: {error.message}")))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def expect_failures(self, predicate: Callable[[Problem], bool] | str | None = None, status: int | None = None,
                        *, text: str | None = None, kind: str | None = None) -> None:
        """Allow problems: `expect_failures("/v1/models", 422)` (URL substring and/or status; the console line
        for that response too), `expect_failures(text="…")` (a console/page error's text), or any predicate
        taking a `Problem`. Allowances add up for the rest of the test."""
        if callable(predicate):
            self.allowed.append(predicate)
        else:
            self.allowed.append(failure_matcher(url=predicate, status=status, text=text, kind=kind))

    def unexpected(self) -> list[Problem]:
        with self._lock:
            return [p for p in self.problems if not any(allow(p) for allow in self.allowed)]

    def _add(self, problem: Problem) -> None:
        with self._lock:
            self.problems.append(problem)

    def _console(self, message) -> None:
        if message.type != "error":
            return
        status = self.STATUS.search(message.text)
        self._add(Problem("console", message.text, (message.location or {}).get("url", ""),
                          int(status.group(1)) if status else None))

    def _request_failed(self, request) -> None:
        failure = request.failure or "failed"
        if request.resource_type == "eventsource" and "ERR_ABORTED" in failure:
            return  # EventSource.close() (say on the job's `end`) aborts its stream: that is how it is used
        self._add(Problem("requestfailed", failure, request.url))

    def _response(self, response) -> None:
        if response.status >= 400:
            self._add(Problem("response", response.status_text, response.url, response.status))


@pytest.fixture
def page(browser, request):
    """A fresh context (1280×800) and page; at teardown, no problems other than those declared with
    `page.expect_failures(...)` (see PageWatch). `page.watch` holds what was recorded."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    new_page = context.new_page()
    watch = PageWatch()
    watch.attach(new_page)
    new_page.watch = watch
    new_page.expect_failures = watch.expect_failures
    yield new_page
    unexpected = watch.unexpected()
    context.close()
    if unexpected:
        listing = "\n".join(f"  {p}" for p in unexpected)
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            request.node.add_report_section("teardown", "page problems", listing)  # the test's own error comes first
        else:
            pytest.fail(f"the page had problems:\n{listing}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (the `page` fixture reports its problems only when
    the test itself passed, so that a failing test shows its own error first)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def open_explorer(page, live, key: str | None = None):
    """Open the explorer (`/ui/`) in `page`, type the API key into its key field (`#api-key`), apply it
    (`#api-key-save`) and wait for the model list it reloads. The page asks `GET /v1/auth` first and calls
    nothing that needs a key before it has one: any 401 fails the test."""
    page.goto(f"{live.url}/ui/")
    page.wait_for_load_state("networkidle")
    page.fill("#api-key", live.key if key is None else key)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/v1/models" and r.request.method == "GET") as answer:
        page.click("#api-key-save")
    assert answer.value.status == 200, f"GET /v1/models with the key: {answer.value.status}"
    return page


@pytest.fixture
def explorer(page, live):
    """`page` on the explorer (`/ui/`) with the API key applied through the page's key field (open_explorer)."""
    return open_explorer(page, live)


def shot(page, name: str, full_page: bool = True) -> Path:
    """Save a screenshot of `page` as docs/ui/<name>.png (the README shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path
