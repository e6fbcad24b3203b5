"""A real worker process (`python -m tests.jobs.dying_worker --name N`) that SIGKILLs itself right after RQ
hands it a job — after the dequeue, before the claim: the job's record is still `queued` and its RQ job
sits in the queue's intermediate list, as a worker killed at that instant leaves them."""

from __future__ import annotations

import os
import signal
import sys

from workers import main


def die_on_dequeue(self, job, queue):
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main.ConvscopeWorker.execute_job = die_on_dequeue
    main.main(sys.argv[1:])
