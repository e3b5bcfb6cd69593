"""CUDA graph replay, checked without a GPU: GraphedStep's schedule (warm-up, one recording,
replays, fallback) with torch.cuda's graph API replaced by a recorder, and the optimization
iteration's fitness for recording. tests/test_gpu.py checks the real thing."""

import contextlib

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline import optimize, stylize
from pipeline.cudagraph import GraphCaptureWarning, GraphedStep
from pipeline.images import load_image
from pipeline.losses import TemporalLoss


class FakeCuda:
    """Stands in for the parts of torch.cuda that GraphedStep uses. While recording, the step
    must have no effect, as in a real capture; a failing recording fails at capture_end, as an
    invalidated capture does."""

    def __init__(self, fail_recording: bool = False):
        self.recording = False
        self.streams_entered = 0
        self.recordings = 0
        self.replays = 0
        self.modes = []
        test = self

        class Graph:
            def capture_begin(self, capture_error_mode="global"):
                test.recordings += 1
                test.modes.append(capture_error_mode)
                test.recording = True

            def capture_end(self):
                test.recording = False
                if fail_recording:
                    raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

            def replay(self):
                test.replays += 1
                test.last_step()

        class Stream:
            def wait_stream(self, other):
                pass

        self.Graph, self.Stream = Graph, Stream

    @contextlib.contextmanager
    def stream(self, stream):
        self.streams_entered += 1
        yield

    def install(self, monkeypatch, step):
        self.last_step = step
        monkeypatch.setattr(torch.cuda, "CUDAGraph", self.Graph)
        monkeypatch.setattr(torch.cuda, "Stream", self.Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda: self.Stream())
        monkeypatch.setattr(torch.cuda, "stream", self.stream)
        monkeypatch.setattr(torch.cuda, "graph", None)  # its synchronize and empty_cache are avoided
        monkeypatch.setattr(torch.cuda, "synchronize", None)


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
    assert cuda.streams_entered == 4  # the warm-up and the recording ran on the side stream
    assert cuda.recordings == 1
    assert cuda.modes == ["thread_local"]  # other threads may use CUDA meanwhile
    assert cuda.replays == 7  # the recording's call replays too
    graphed.close()
    assert graphed.graph is None


def test_a_failed_recording_warns_once_and_continues_eagerly(monkeypatch):
    cuda = FakeCuda(fail_recording=True)
    step, executed = counting_step(cuda)
    cuda.install(monkeypatch, step)
    graphed = GraphedStep(step, enabled=True, warmup=2)
    with pytest.warns(
        GraphCaptureWarning,
        match=r"^--cuda-graphs: recording the iteration failed "
        r"\(operation not permitted when stream is capturing\); continuing without$",
    ):
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


class Trace(TorchDispatchMode):
    """One iteration's operations as a CUDA graph would record them: each with its non-tensor
    arguments (baked into a recording) and its tensors' shapes, and the storages it reads that the
    iteration did not make itself (a recording reads those same addresses on every replay)."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple] = []
        self.read_from_outside: list[int] = []
        self.made: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        signature = []
        for value in pytree.tree_leaves((args, kwargs)):
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage().data_ptr()
                if storage not in self.made:
                    self.read_from_outside.append(storage)
                signature.append((tuple(value.shape), value.dtype))
            else:
                signature.append(repr(value))
        self.ops.append((str(func), tuple(signature)))
        self.made.update(v.untyped_storage().data_ptr() for v in pytree.tree_leaves(out) if isinstance(v, torch.Tensor))
        return out


@pytest.mark.parametrize(
    "settings, bf16",
    [
        ({}, False),
        ({}, True),
        ({"preserve_color": "luminance", "tv_weight": 1.0}, False),
        ({"preserve_color": "histogram"}, False),
    ],
    ids=["default", "bf16-autocast", "luminance-tv", "histogram"],
)
def test_every_iteration_is_the_same_recording(monkeypatch, settings, bf16):
    """What makes a replayed graph silently wrong, checked without a GPU: an iteration that
    depends on Python-side state (a changing scalar or index, a branch on the data) or that
    swaps the tensors holding its state instead of updating them in place."""
    traces: list[Trace] = []

    class Recorder:
        def __init__(self, step, *, enabled):
            self.step = step

        def __call__(self):
            with Trace() as trace:
                self.step()
            traces.append(trace)

        def close(self):
            pass

    monkeypatch.setattr(optimize, "GraphedStep", Recorder)  # the optimization loop's step
    content, style = load_image("samples/chelsea.png", 32), load_image("samples/ihc.png", 32)
    temporal = {"temporal": TemporalLoss(content.flip(3), torch.ones(1, 1, *content.shape[-2:]))}
    stylizer = stylize.Stylizer([style], stylize.StyleSettings(iterations=8, **settings), report_every=3)
    if bf16:
        stylizer.autocast_dtype = torch.bfloat16  # what CUDA gets by default; CPU autocast has it too
    stylizer.stylize(content, extra_losses=temporal)
    assert len(traces) == 8
    first = traces[0]
    assert len(first.ops) > 100 and len(first.read_from_outside) > 10
    for trace in traces[1:]:
        assert trace.ops == first.ops
        assert trace.read_from_outside == first.read_from_outside
