"""One key floods, another key works: what the second key sees, against the same key alone, in one run.

    python -m bench.tenants [--seconds 20] [--worker-nice N] [--beyond-share-nice N] [--flood-predicts 2] [--no-record]

Starts its own API (uvicorn, keys `flood` and `calm`) and two workers (`python -m workers`) against the configured
Redis, under a private key prefix and queue (deleted afterwards). Two phases of `--seconds` each:

- alone: `calm` runs one closed-loop predict client (the built-in model, an uploaded image) and submits a fast job
  (saliency without its scores) every second;
- flood: the same, while `flood` keeps 150 or more jobs of the same kind queued, holds as many event streams as it
  may, and runs `--flood-predicts` closed-loop predict clients of its own (two). The flood's clients run in a
  process of their own, as another tenant's would: in the same process their threads would take turns with
  `calm`'s for the interpreter's lock, and `calm`'s latency would count that wait.

Reported for `calm`, both phases: predict latency p50/p99 (ms, client side), job wait p50/p99 (ms: the job's
`timing.queued`, created → started), and the ratios flood ÷ alone (the target: predict p99 within 2×); for the flood,
how long its jobs ran (the bound on `calm`'s wait is one such run) and its requests answered 429. The load average
of the machine before and during the flood is printed too: on a small shared machine the workers' and the flood's
compute take cores from `calm`'s predicts whatever the scheduling. Writes bench/RESULTS.md unless `--no-record`.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from bench.cleanup import delete_run  # noqa: E402
from bench.results import load_average  # noqa: E402
from bench.timing import beyond_phases, free_port, pct, server_timing, wait_ready  # noqa: E402
from core.settings import get_settings  # noqa: E402

MODEL = "efficientnet-lite0"
FLOOD, CALM = {"Authorization": "Bearer key-flood"}, {"Authorization": "Bearer key-calm"}
FAST = {"evaluate": False}
FLOOD_QUEUED = 150


def photo(seed: int) -> bytes:
    import skimage.data

    array = skimage.data.chelsea()[seed % 40:, (seed * 7) % 50:]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(out, format="PNG")
    return out.getvalue()


class Phase:
    """`calm`'s figures in one phase: predict latencies and job waits (ms)."""

    def __init__(self, url: str, image: str, seconds: float, targets):
        self.url, self.image, self.seconds, self.targets = url, image, seconds, targets
        self.predicts: list[float] = []
        self.phases: list[dict[str, float]] = []  # each predict's Server-Timing (ms)
        self.jobs: list[str] = []

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        submitter = threading.Thread(target=self._submit, args=(end,))
        submitter.start()
        with httpx.Client(base_url=self.url, timeout=60) as http:
            body = {"image": {"id": self.image}}
            while time.monotonic() < end:
                start = time.perf_counter()
                answer = http.post(f"/v1/models/{MODEL}/predict", json=body, headers=CALM)
                if answer.status_code == 200:
                    self.predicts.append((time.perf_counter() - start) * 1000)
                    self.phases.append(server_timing(answer.headers.get("server-timing")))
        submitter.join()

    def _submit(self, end: float) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while time.monotonic() < end:
                spec = {"kind": "saliency", "model": MODEL, "image": {"id": self.image},
                        "params": {**FAST, "target": next(self.targets)}}
                answer = http.post("/v1/jobs", json=spec, headers=CALM)
                if answer.status_code == 202:
                    self.jobs.append(answer.json()["id"])
                time.sleep(1.0)

    def split(self) -> str:
        """The predicts' median server phases and `total` in the API (ms), and the rest of the client's time: outside
        the API (the network, the HTTP server, the client)."""
        names = dict.fromkeys(name for phases in self.phases for name in phases)
        medians = {name: statistics.median(p.get(name, 0.0) for p in self.phases) for name in names}
        outside = pct([split[1] for t, p in zip(self.predicts, self.phases, strict=True)
                       if (split := beyond_phases(t, p))], 50)
        return ", ".join(f"{name} {ms:.1f}" for name, ms in [*medians.items(), ("outside", outside)])

    def waits(self, http: httpx.Client) -> list[float]:
        """Each job's wait in its queue (ms), once all have started."""
        waits = []
        for job_id in self.jobs:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                job = http.get(f"/v1/jobs/{job_id}", headers=CALM).json()
                if job["timing"]["queued"] is not None:
                    waits.append(job["timing"]["queued"])
                    break
                time.sleep(0.1)
        return waits


class Flood:
    """`flood`'s load: its queue kept full, its event streams held, two predict clients."""

    def __init__(self, url: str, image: str, holds: int, predicts: int):
        self.url, self.image, self.holds = url, image, holds
        self.stop = threading.Event()
        self.jobs: list[str] = []
        self.refused: dict[str, int] = {}
        self.threads = [threading.Thread(target=self._jobs)] + [threading.Thread(target=self._predicts)
                                                                 for _ in range(predicts)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _jobs(self) -> None:
        target = 0
        with httpx.Client(base_url=self.url, timeout=60) as http, httpx.Client(base_url=self.url, timeout=None) as held:
            streams = []
            while not self.stop.is_set():
                queued = http.get("/v1/usage", headers=FLOOD).json()["queued_jobs"]["held"]
                for _ in range(max(0, FLOOD_QUEUED + 50 - queued) if queued < FLOOD_QUEUED else 0):
                    target += 1
                    spec = {"kind": "saliency", "model": MODEL, "image": {"id": self.image},
                            "params": {**FAST, "target": target % 1000}}
                    answer = http.post("/v1/jobs", json=spec, headers=FLOOD)
                    if answer.status_code == 202:
                        self.jobs.append(answer.json()["id"])
                    else:
                        self._refused(answer)
                while len(streams) < self.holds + 1 and len(self.jobs) > 100:  # one more than allowed
                    stream = held.stream("GET", f"/v1/jobs/{self.jobs[-1 - len(streams)]}/events", headers=FLOOD)
                    response = stream.__enter__()
                    if response.status_code != 200:
                        response.read()
                        self._refused(response)
                        stream.__exit__(None, None, None)
                        break
                    streams.append(stream)
                self.stop.wait(0.5)
            for stream in streams:
                stream.__exit__(None, None, None)

    def _predicts(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            body = {"image": {"id": self.image}}
            while not self.stop.is_set():
                answer = http.post(f"/v1/models/{MODEL}/predict", json=body, headers=FLOOD)
                if answer.status_code != 200:
                    self._refused(answer)
                    time.sleep(0.2)

    def _refused(self, answer: httpx.Response) -> None:
        try:
            code = answer.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = str(answer.status_code)
        self.refused[code] = self.refused.get(code, 0) + 1

    @staticmethod
    def runs(http: httpx.Client) -> list[float]:
        """How long the flood's ended jobs ran (ms, started → ended)."""
        done = http.get("/v1/jobs?limit=500&status=finished", headers=FLOOD).json()["jobs"]
        return [(datetime.fromisoformat(j["ended_at"]) - datetime.fromisoformat(j["started_at"])).total_seconds()
                * 1000 for j in done]


def flood_process(url: str, image: str, holds: int, predicts: int, stop, out) -> None:
    """The flood's clients, in a process of their own until `stop` is set; what they did goes back on `out`."""
    flood = Flood(url, image, holds, predicts)
    flood.start()
    out.put("started")
    stop.wait()
    flood.end()
    out.put((len(flood.jobs), flood.refused))


def start(settings, token: str, logs: Path, nice: int, beyond_share_nice: int) -> tuple[list[subprocess.Popen], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env.update(CONVSCOPE_REDIS_URL=settings.redis_url, CONVSCOPE_REDIS_PREFIX=f"bench-ten-{token}:",
               CONVSCOPE_JOB_QUEUE=f"bench-ten-{token}", CONVSCOPE_DATA_DIR=str(settings.data_dir),
               CONVSCOPE_LOG_LEVEL="WARNING", CONVSCOPE_WORKER_WARM_UP="false",
               CONVSCOPE_API_KEYS="flood:key-flood,calm:key-calm", CONVSCOPE_WORKER_NICE=str(nice),
               CONVSCOPE_FORWARD_BEYOND_SHARE_NICE=str(beyond_share_nice), PYTHONPATH=str(ROOT))
    port = free_port()
    out = open(logs / "api.log", "wb")
    processes = [subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory", "--host",
                                   "127.0.0.1", "--port", str(port), "--no-access-log"], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)]
    for i in range(2):
        processes.append(subprocess.Popen([sys.executable, "-m", "workers", "--name", f"bench-ten-{token}-{i}"],
                                          cwd=ROOT, env=env, stdout=open(logs / f"worker{i}.log", "wb"),
                                          stderr=subprocess.STDOUT))
    return processes, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--worker-nice", type=int, default=get_settings().worker_nice,
                        help="CONVSCOPE_WORKER_NICE of the two workers (default: the setting's)")
    parser.add_argument("--beyond-share-nice", type=int, default=get_settings().forward_beyond_share_nice,
                        help="CONVSCOPE_FORWARD_BEYOND_SHARE_NICE of the API (default: the setting's; 0: no lowered "
                             "threads)")
    parser.add_argument("--flood-predicts", type=int, default=2, help="closed-loop predict clients of the flood")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    token = uuid.uuid4().hex[:8]
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-tenants-{token}"
    logs.mkdir(parents=True)
    processes, url = start(settings, token, logs, args.worker_nice, args.beyond_share_nice)
    targets = iter(range(10**6))
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            wait_ready(url)
            images = {}
            for name, headers, seed in (("calm", CALM, 1), ("flood", FLOOD, 2)):
                images[name] = http.post("/v1/images", files={"file": ("p.png", photo(seed), "image/png")},
                                         headers=headers).json()["id"]
            warm = [http.post("/v1/jobs?wait=60", json={"kind": "saliency", "model": MODEL, "image": {
                "id": images["calm"]}, "params": {**FAST, "target": 900 + i}}, headers=CALM) for i in range(4)]
            assert all(w.status_code == 200 for w in warm), [w.text for w in warm]
            holds = http.get("/v1/usage", headers=FLOOD).json()["holds"]["limit"]

            load_before = load_average()
            alone = Phase(url, images["calm"], args.seconds, targets)
            alone.run()
            spawn = multiprocessing.get_context("spawn")
            stop, out = spawn.Event(), spawn.Queue()
            flood = spawn.Process(target=flood_process, args=(url, images["flood"], holds, args.flood_predicts,
                                                              stop, out))
            flood.start()
            assert out.get(timeout=60) == "started"
            time.sleep(3)  # its queue filled and its streams held
            crowded = Phase(url, images["calm"], args.seconds, targets)
            crowded.run()
            load_during = load_average()
            stop.set()
            flood_jobs, flood_refused = out.get(timeout=120)
            flood.join(30)
            waits = {"alone": alone.waits(http), "flood": crowded.waits(http)}
            runs = Flood.runs(http)
            queued_left = http.get("/v1/usage", headers=FLOOD).json()["queued_jobs"]["held"]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        delete_run(settings.redis_url, f"bench-ten-{token}:", f"bench-ten-{token}")

    lines = [f"built-in model {MODEL}; two workers (niceness {args.worker_nice}); the API's views beyond a key's share "
             f"at niceness {args.beyond_share_nice}; jobs: saliency without scores; "
             f"{args.seconds:g} s a phase; the flood's predict clients: {args.flood_predicts}",
             f"load average (1 min) before: {load_before}, at the end of the flood: {load_during} "
             f"({os.cpu_count()} cores)"]
    for name, phase in (("alone", alone), ("flood", crowded)):
        lines.append(f"calm {name}: predict p50 {pct(phase.predicts, 50):.1f} ms, p99 {pct(phase.predicts, 99):.1f} ms "
                     f"({len(phase.predicts)} requests); job wait p50 {pct(waits[name], 50):.0f} ms, "
                     f"p99 {pct(waits[name], 99):.0f} ms ({len(waits[name])} jobs); predict's median split (ms): "
                     f"{phase.split()}")
    lines.append(f"flood ÷ alone: predict p50 {pct(crowded.predicts, 50) / pct(alone.predicts, 50):.2f}×, p99 "
                 f"{pct(crowded.predicts, 99) / pct(alone.predicts, 99):.2f}× (target ≤ 2×); job wait p99 "
                 f"{pct(waits['flood'], 99):.0f} ms against one flood job's run: median "
                 f"{statistics.median(runs) if runs else float('nan'):.0f} ms, max {max(runs, default=float('nan')):.0f} ms")
    lines.append(f"flood: {flood_jobs} jobs submitted, {queued_left} still queued at the end, "
                 f"refused: {', '.join(f'{n} {code}' for code, n in sorted(flood_refused.items())) or 'none'}")
    print("\n".join(lines))
    if not args.no_record:
        results.record("tenants (one key floods, another works)", lines)


if __name__ == "__main__":
    main()
