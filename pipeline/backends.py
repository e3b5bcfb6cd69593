"""Where a job's tasks run: threads of this process ('local') or the workers of a Dask cluster
('dask', through joblib's dask backend). The photo archive runs its batches here
(archive_backends.py), the video job its shots (videoshots.py).

`connect` finds the workers first: how many places run at once and their least free GPU memory
(the archive's batch size comes from it); `run_tasks` runs `function(common, item)` for every
item on them and yields each result as it finishes, in any order."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from joblib import Parallel, delayed, parallel_config

from .devices import parse_devices
from .errors import InputError

BACKENDS = ("local", "dask")  # --backend's names
# Seconds to wait for the Dask scheduler at --scheduler before refusing the job.
CONNECT_TIMEOUT = 30
# How often a Dask job hands out its unfinished tasks again after losing a worker that held the
# only copy of their shared data (run_on_dask); each loss is a worker gone, so a few is plenty.
LOST_DATA_RETRIES = 3


def check_backend(backend: str, devices: str, scheduler: str | None) -> None:
    """--backend with --device and --scheduler, as every command that runs on workers takes them."""
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend!r}: must be {' or '.join(map(repr, BACKENDS))}")
    if backend == "dask" and devices != "auto":
        raise InputError("--device applies to --backend local; Dask workers use their own devices")
    if backend == "local" and scheduler:
        raise InputError("--scheduler applies to --backend dask; add --backend dask to run on that cluster")


@dataclass(frozen=True)
class Workers:
    """What runs the tasks: how many devices or Dask workers, the least free GPU memory over
    them (None without CUDA) and, for Dask, the client of the cluster."""

    count: int
    free_memory: int | None
    client: Any = None


def free_memory(devices: Sequence[str] | None = None) -> int | None:
    """Least free memory over these CUDA devices (default: all of this process's; Dask workers
    run it through Client.run), None without CUDA."""
    cuda = [torch.device(d) for d in (devices or parse_devices("auto")) if torch.device(d).type == "cuda"]
    return min(torch.cuda.mem_get_info(d)[0] for d in cuda) if cuda else None


def run_tasks(
    function: Callable[[Any, Any], Any],
    common: Any,
    items: Iterable,
    *,
    workers: Workers,
    threads: int,
    stop: Callable[[], None],
) -> Iterator:
    """function(common, item) for every item: as joblib tasks on `threads` threads here, or on the
    Dask cluster of `workers.client` (run_on_dask: `common` scattered to each worker once, not
    sent with every task). `stop()` ends what local threads still run when the caller stops (Ctrl-C):
    threads cannot be killed, their tasks must stop themselves."""
    with warnings.catch_warnings():
        # On Ctrl-C joblib warns that it cancelled tasks in flight: that is what was asked for.
        warnings.filterwarnings("ignore", "[0-9]+ tasks which were still being processed", UserWarning)
        if workers.client is not None:
            yield from run_on_dask(function, common, items, workers.client)
            return
        tasks = (delayed(function)(common, item) for item in items)
        try:
            with parallel_config(backend="threading", n_jobs=threads):
                yield from Parallel(return_as="generator_unordered")(tasks)
        finally:
            stop()


def run_on_dask(function: Callable[[Any, Any], Any], common: Any, items: Iterable, client) -> Iterator:
    """run_tasks on a Dask cluster, one task per item, each result as it finishes. Not through
    joblib's dask backend: on a cluster of one single-threaded worker (one GPU) joblib counts one
    job and runs every task in this process instead. `common` is scattered to every worker once; a
    worker that dies (killed, preempted) takes its copy along, and where no other worker holds one
    the scheduler cannot rerun its tasks and cancels every task still waiting for it. Then the
    items not finished are handed out again, after a fresh scatter, up to LOST_DATA_RETRIES times:
    the tasks resume from their own records (a shot from its last finished frame)."""
    from distributed import as_completed

    pending = dict(enumerate(items))
    for attempt in range(LOST_DATA_RETRIES + 1):
        [shared] = client.scatter([common], broadcast=True, hash=False)
        # Each future's item number, so that a rerun knows what is left.
        futures = {client.submit(function, shared, item, pure=False): i for i, item in pending.items()}
        finished = False
        try:
            for future in as_completed(futures):
                result = future.result()
                del pending[futures[future]]
                yield result
            finished = True
            return
        except CancelledError:
            if attempt == LOST_DATA_RETRIES:
                raise
        finally:
            if not finished:  # an error, Ctrl-C, or a caller that stopped reading: nothing left running for us
                client.cancel(list(futures))


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
