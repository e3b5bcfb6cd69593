"""Replaying one optimization iteration as a CUDA graph.

An L-BFGS iteration at 512x512 launches a few hundred small kernels (VGG-19 forward and
backward, the losses, the optimizer); from Python each launch costs several microseconds, which
adds up to about as much as the GPU's own work. Recorded once as a CUDA graph, the iteration is
launched as a whole. The recorded function must be a fixed sequence of tensor operations on
tensors that outlive the graph, updated in place (see lbfgs.BatchedLBFGS), with no host reads.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


class GraphCaptureWarning(UserWarning):
    """The iteration could not be recorded as a CUDA graph and runs eagerly instead."""


class GraphedStep:
    """Call `step` once per call; with `enabled` (CUDA only), the first `warmup` calls run it
    eagerly on a side stream (which capture requires: cuDNN's benchmark and the libraries' lazy
    set-up happen there), the next records it as a CUDA graph and every later call replays that."""

    def __init__(self, step: Callable[[], None], *, enabled: bool, warmup: int = 3):
        self.step = step
        self.enabled = enabled
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.side_stream = torch.cuda.Stream() if enabled else None

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if not self.enabled:
            self.step()
            return
        self.calls += 1
        if self.calls <= self.warmup:
            current = torch.cuda.current_stream()
            self.side_stream.wait_stream(current)
            with torch.cuda.stream(self.side_stream):
                self.step()
            current.wait_stream(self.side_stream)
            return
        graph = torch.cuda.CUDAGraph()
        try:
            # Recording runs no kernel: the state is untouched until the first replay. Not the
            # torch.cuda.graph context: it synchronizes the device and empties the allocator's
            # cache (every GPU's), which a recording in another thread would not survive. The
            # archive optimizes one batch per GPU at a time (archive_worker.WorkerState.device_slot),
            # but all its GPUs at once, one thread each, and a thread whose batch ran out of memory
            # empties the cache after giving its GPU back. thread_local: other threads may go on
            # using CUDA meanwhile.
            with torch.cuda.stream(self.side_stream):
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    self.step()
                finally:
                    graph.capture_end()
        except RuntimeError as exc:
            self.enabled = False
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = f"--cuda-graphs: recording the iteration failed ({first_line}); continuing without"
            warnings.warn(message, GraphCaptureWarning, stacklevel=2)
            self.step()
            return
        self.graph = graph
        graph.replay()

    def close(self) -> None:
        """Release the graph's private memory pool."""
        self.graph = None
