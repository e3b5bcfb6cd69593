"""The archive's batches on the job's workers (backends.py): threads of this process ('local',
two per device, so that one batch decodes or encodes while the other holds the device) or the
workers of a Dask cluster ('dask'). Every batch is one task (archive_worker.run_batch); each
record is yielded as its image finishes, in any order."""

from __future__ import annotations

from collections.abc import Iterator

from .archive_records import Batch, Job
from .archive_worker import WORKER, run_batch
from .backends import Workers, run_tasks

SLOTS_PER_DEVICE = 2  # one batch on the device, one decoding or encoding beside it


def run_batches(job: Job, batches: list[Batch], workers: Workers) -> Iterator[dict]:
    threads = SLOTS_PER_DEVICE * workers.count
    stop = lambda: WORKER.stop(job.run)  # noqa: E731  (threads stop at their batches' next iteration)
    for records in run_tasks(run_batch, job, batches, workers=workers, threads=threads, stop=stop):
        yield from records
