"""Where the archive's batches run: threads of this process ('local', two per device, so that one
batch decodes or encodes while the other holds the device) or the workers of a Dask cluster
('dask', through joblib's dask backend).

Both are functions of one signature, `backend(job, batches, workers)`, that run every batch
(archive_worker.run_batch) and yield each record as its image finishes, in any order; BACKENDS
picks one by the name given to --backend. `connect` finds the workers first: how many places
run at once and their least free GPU memory, which the batch size comes from."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from joblib import Parallel, delayed, parallel_config

from .archive_records import Batch, Job
from .archive_worker import WORKER, parse_devices, run_batch
from .errors import InputError

SLOTS_PER_DEVICE = 2  # one batch on the device, one decoding or encoding beside it
# Seconds to wait for the Dask scheduler at --scheduler before refusing the job.
CONNECT_TIMEOUT = 30


@dataclass(frozen=True)
class Workers:
    """What runs the batches: how many devices or Dask workers, the least free GPU memory over
    them (None without CUDA) and, for Dask, the client of the cluster."""

    count: int
    free_memory: int | None
    client: Any = None


def free_memory(devices: Sequence[str] | None = None) -> int | None:
    """Least free memory over these CUDA devices (default: all of this process's; Dask workers
    run it through Client.run), None without CUDA."""
    cuda = [torch.device(d) for d in (devices or parse_devices("auto")) if torch.device(d).type == "cuda"]
    return min(torch.cuda.mem_get_info(d)[0] for d in cuda) if cuda else None


def run_batches(job: Job, batches: list[Batch]) -> Iterator[dict]:
    """Every batch as a joblib task, on whichever joblib backend is configured around it."""
    with warnings.catch_warnings():
        # On Ctrl-C joblib warns that it cancelled tasks in flight: that is what was asked for.
        warnings.filterwarnings("ignore", "[0-9]+ tasks which were still being processed", UserWarning)
        for records in Parallel(return_as="generator_unordered")(delayed(run_batch)(job, batch) for batch in batches):
            yield from records


def local_backend(job: Job, batches: list[Batch], workers: Workers) -> Iterator[dict]:
    try:
        with parallel_config(backend="threading", n_jobs=SLOTS_PER_DEVICE * workers.count):
            yield from run_batches(job, batches)
    finally:
        WORKER.stop(job.run)  # threads cannot be killed: their batches stop at the next iteration


def dask_backend(job: Job, batches: list[Batch], workers: Workers) -> Iterator[dict]:
    # scatter: the job (style images included) goes to each worker once, not with every task.
    with parallel_config(backend="dask", client=workers.client, scatter=[job]):
        yield from run_batches(job, batches)


Backend = Callable[[Job, list[Batch], Workers], Iterator[dict]]
BACKENDS: dict[str, Backend] = {"local": local_backend, "dask": dask_backend}


@contextmanager
def connect(backend: str, devices: tuple[str, ...] | None, scheduler: str | None, client=None) -> Iterator[Workers]:
    """The workers of `backend`: these devices here, or the Dask cluster at `scheduler` (or
    `client`, or the default client)."""
    if backend == "local":
        yield Workers(count=len(devices), free_memory=free_memory(devices))
        return
    with dask_client(scheduler, client) as cluster:
        per_worker = cluster.run(free_memory)  # {worker address: its least free GPU memory or None}
        on_gpus = [f for f in per_worker.values() if f is not None]
        yield Workers(count=len(per_worker), free_memory=min(on_gpus) if on_gpus else None, client=cluster)


@contextmanager
def dask_client(scheduler: str | None, client=None):
    """The given client, a new one connected to `scheduler`, or the current default client."""
    try:
        from distributed import Client, get_client
    except ImportError:
        raise InputError("--backend dask needs dask.distributed: pip install 'dask[distributed]'") from None
    if client is not None:
        yield client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler ({exc})") from None
        with client:
            yield client
        return
    try:
        client = get_client()
    except ValueError:
        needs = "--backend dask needs --scheduler tcp://HOST:8786 (the address of a running Dask scheduler)"
        raise InputError(needs) from None
    yield client  # outside the try: a ValueError of the job's own is not taken for a missing cluster
