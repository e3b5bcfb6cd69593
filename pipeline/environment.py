"""What `stylize doctor` checks: the GPU, ffmpeg and the VGG-19 weights."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import torch

from .decode import ffmpeg_binary
from .devices import mps_available
from .errors import PipelineError
from .vgg import load_vgg19, original_weights_path


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    essential: bool = True


def gpu_check() -> Check:
    if torch.cuda.is_available():
        names = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            names.append(
                f"cuda:{index} {torch.cuda.get_device_name(index)} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
            )
        return Check("GPU", True, "; ".join(names), essential=False)
    if mps_available():
        return Check("GPU", True, "Apple MPS", essential=False)
    return Check("GPU", False, f"none: torch {torch.__version__} will use the CPU (slow)", essential=False)


def ffmpeg_check() -> Check:
    try:
        binary = ffmpeg_binary()
        first_line = subprocess.run(
            [binary, "-version"], capture_output=True, text=True, timeout=30
        ).stdout.splitlines()[0]
    except (PipelineError, OSError, IndexError, subprocess.TimeoutExpired) as exc:
        return Check("ffmpeg", False, f"not usable: {exc}")
    return Check("ffmpeg", True, f"{binary} ({first_line})")


def weights_check() -> Check:
    try:
        path = original_weights_path()
        load_vgg19("original", layers=["relu1_1"])
    except PipelineError as exc:
        return Check("VGG-19 weights", False, str(exc))
    return Check("VGG-19 weights", True, f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")


def checks() -> list[Check]:
    return [gpu_check(), ffmpeg_check(), weights_check()]
