"""The Dask backend of run_tasks when a worker dies holding the only copy of the tasks' shared
data: the scheduler cannot rerun what waited for it and cancels it; the job hands out what is
left again instead of failing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import pytest

from helpers import local_cluster
from pipeline import backends
from pipeline.backends import Workers, run_tasks

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module


def die_once(common: dict, item: int) -> int:
    """item times the factor, but the first task of item 2 takes its worker process down with it."""
    marker = Path(common["markers"]) / f"{item}.died"
    if item == 2 and not marker.exists():
        marker.touch()
        os._exit(1)  # as a killed or preempted worker: no cleanup, its data gone
    return item * common["factor"]


@pytest.fixture
def one_worker():
    # One worker process: the scattered data has no other copy; its nanny starts a new one.
    with local_cluster(1) as (_, client):
        yield client


def run(client, tmp_path: Path) -> list[int]:
    common = {"markers": str(tmp_path), "factor": 10, "padding": "x" * 4096}  # large enough to be scattered
    workers = Workers(count=1, free_memory=None, client=client)
    return list(run_tasks(die_once, common, [1, 2, 3, 4], workers=workers, threads=1, stop=lambda: None))


def test_tasks_cancelled_by_a_lost_worker_are_handed_out_again(one_worker, tmp_path):
    assert sorted(run(one_worker, tmp_path)) == [10, 20, 30, 40]
    assert (tmp_path / "2.died").exists()


def test_without_retries_the_lost_worker_cancels_the_job(one_worker, tmp_path, monkeypatch):
    """What the retries are for: the same loss, handed out once, fails the whole run."""
    monkeypatch.setattr(backends, "LOST_DATA_RETRIES", 0)
    with pytest.raises(backends.CancelledError):
        run(one_worker, tmp_path)


def process_id(common: dict, item: int) -> int:
    return os.getpid()


def test_a_cluster_of_one_single_threaded_worker_runs_the_tasks_there(one_worker):
    """Not in this process (joblib's dask backend, counting one job, ran them here)."""
    workers = Workers(count=1, free_memory=None, client=one_worker)
    ran = set(run_tasks(process_id, {}, [1, 2], workers=workers, threads=1, stop=lambda: None))
    assert ran == set(one_worker.run(os.getpid).values()) and os.getpid() not in ran
