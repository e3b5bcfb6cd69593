"""GraphedStep's schedule (warm-up, one recording, replays, fallback), with torch.cuda's graph
API replaced by a recorder so that it runs without a GPU; tests/test_gpu.py checks the real one."""

import contextlib

import pytest
import torch

from pipeline.cudagraph import GraphCaptureWarning, GraphedStep


class FakeCuda:
    """Stands in for the parts of torch.cuda that GraphedStep uses. A recording runs the step
    with `recording` set; the step must then have no effect, as in a real capture."""

    def __init__(self, fail_recording: bool = False):
        self.fail_recording = fail_recording
        self.recording = False
        self.stream_entered = 0
        self.recordings = 0
        test = self

        class Graph:
            def __init__(self):
                self.step = None

            def replay(self):
                test.replays += 1
                self.step()

        class Stream:
            def wait_stream(self, other):
                pass

        self.Graph, self.Stream = Graph, Stream
        self.replays = 0

    @contextlib.contextmanager
    def stream(self, stream):
        self.stream_entered += 1
        yield

    @contextlib.contextmanager
    def graph(self, graph):
        self.recordings += 1
        self.recording = True
        try:
            if self.fail_recording:
                raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
            yield
        finally:
            self.recording = False
        graph.step = self.last_step

    def install(self, monkeypatch, step):
        self.last_step = step
        monkeypatch.setattr(torch.cuda, "CUDAGraph", self.Graph)
        monkeypatch.setattr(torch.cuda, "Stream", self.Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda: self.Stream())
        monkeypatch.setattr(torch.cuda, "stream", self.stream)
        monkeypatch.setattr(torch.cuda, "graph", self.graph)


def counting_step(cuda: FakeCuda):
    executed = []

    def step():
        if not cuda.recording:
            executed.append(1)

    return step, executed


def test_warms_up_then_records_once_and_replays(monkeypatch):
    cuda = FakeCuda()
    step, executed = counting_step(cuda)
    cuda.install(monkeypatch, step)
    graphed = GraphedStep(step, enabled=True, warmup=3)
    for _ in range(10):
        graphed()
    assert len(executed) == 10  # every call did one iteration: the recording itself does none
    assert cuda.stream_entered == 3  # the warm-up ran on the side stream
    assert cuda.recordings == 1
    assert cuda.replays == 7  # the recording's call replays too
    graphed.close()
    assert graphed.graph is None


def test_a_failed_recording_warns_once_and_continues_eagerly(monkeypatch):
    cuda = FakeCuda(fail_recording=True)
    step, executed = counting_step(cuda)
    cuda.install(monkeypatch, step)
    graphed = GraphedStep(step, enabled=True, warmup=2)
    with pytest.warns(GraphCaptureWarning, match=r"^--cuda-graphs: recording the iteration failed \(operation not permitted when stream is capturing\); continuing without$"):
        for _ in range(6):
            graphed()
    assert len(executed) == 6
    assert cuda.recordings == 1 and cuda.replays == 0


def test_disabled_calls_the_step_directly():
    executed = []
    graphed = GraphedStep(lambda: executed.append(1), enabled=False)
    for _ in range(5):
        graphed()
    assert len(executed) == 5 and graphed.graph is None
