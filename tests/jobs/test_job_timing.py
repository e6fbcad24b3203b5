"""The Job's time split (`timing`, ms): queued, started, method, scoring, stored, adding up to its total; made from
the record's times and the stages its worker wrote with the ending."""

from __future__ import annotations

from core.jobs.record import JobRecord, JobSpec, JobStages
from core.jobs.status import JobStatus
from service.jobs import timing_of
from tests.conftest import encode, sample
from tests.jobs.conftest import submit, wait_for

PHASES = ("queued", "started", "method", "scoring", "stored")


def record(status: JobStatus, **times) -> JobRecord:
    return JobRecord(id="j", spec=JobSpec(kind="saliency", model="m", model_sha256="0"), status=status, **times)


def test_a_queued_job_has_no_split_yet_and_a_finished_one_adds_up():
    assert timing_of(record(JobStatus.QUEUED, created_at=100.0)).model_dump() == dict.fromkeys((*PHASES, "total"))
    started = timing_of(record(JobStatus.STARTED, created_at=100.0, started_at=100.25))
    assert started.queued == 250.0 and started.method is None and started.total is None
    done = timing_of(record(JobStatus.FINISHED, created_at=100.0, started_at=100.25, ended_at=101.0,
                            stages=JobStages(inputs=0.05, method=0.4, scoring=0.2, encode=0.01)))
    assert done.model_dump() == {"queued": 250.0, "started": 50.0, "method": 400.0, "scoring": 200.0, "stored": 100.0,
                                 "total": 1000.0}
    failed = timing_of(record(JobStatus.FAILED, created_at=100.0, started_at=100.25, ended_at=100.5))
    assert failed.total == 500.0 and failed.method is None


def test_a_finished_job_shows_where_its_time_went(jobs_client):
    pixels = sample("chelsea").copy()
    pixels[0, 0] = [7, 77, 177]  # an image of its own: not answered from another test's cached result
    for params, scored in (({}, True), ({"evaluate": False}, False)):
        job = wait_for(jobs_client, submit(jobs_client, "saliency", encode(pixels), params).json()["id"])
        assert job["status"] == "finished" and not job["cached"], job
        timing = job["timing"]
        assert all(timing[name] is not None and timing[name] >= 0 for name in (*PHASES, "total")), timing
        assert timing["method"] > 0 and (timing["scoring"] > 0) == scored
        assert abs(sum(timing[name] for name in PHASES) - timing["total"]) <= 0.5  # ms rounding of each
