"""Choosing the torch devices from the user's --device value, the same way for every command."""

from __future__ import annotations

import re

import torch

from .errors import InputError
from .settings import DEVICE_HELP


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def pick_device(text: str = "auto") -> torch.device:
    """The one device of `stylize image` and `stylize video` (auto: CUDA, then MPS, then CPU)."""
    return parse_devices(text, one=True)[0]


def parse_devices(text: str, *, one: bool = False) -> tuple[torch.device, ...]:
    """Every command's --device value: 'auto' or a comma-separated list of device names.

    auto is every CUDA device (the first one when `one`), else MPS, else the CPU. One function,
    so every command accepts the same spellings and refuses the same mistakes in the same words.
    """
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise InputError(f"--device {text!r}: no device named; expected {DEVICE_HELP}")
    if one and len(names) > 1:
        raise InputError(f"--device {text}: this command runs on one device; name one ({DEVICE_HELP})")
    if names == ["auto"]:
        if torch.cuda.is_available() and not one:
            return tuple(torch.device("cuda", i) for i in range(torch.cuda.device_count()))
        return (torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"),)
    devices = [named_device(name) for name in names]
    if one:
        return tuple(devices)
    # A list names its workers' devices: "cuda" is cuda:0, so that naming it twice is caught.
    devices = [torch.device("cuda", 0) if d.type == "cuda" and d.index is None else d for d in devices]
    if len(set(devices)) != len(devices):
        raise InputError(f"--device {text}: a device is named twice")
    return tuple(devices)


def named_device(name: str) -> torch.device:
    """One device name other than auto, checked against this machine."""
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(name)
    if name == "mps":
        if not mps_available():
            raise InputError("--device mps: MPS is not available on this machine")
        return torch.device("mps")
    if name == "auto":
        raise InputError("--device auto: auto picks the devices itself; give it alone, not in a list")
    raise InputError(f"--device {name!r}: expected {DEVICE_HELP}")


def configure_precision(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Set the global CUDA speed switches for `precision`; return the autocast dtype or None.

    auto means bf16 autocast (with TF32 for what stays fp32) on CUDA, plain fp32 elsewhere."""
    if device.type != "cuda":
        return None
    torch.backends.cudnn.benchmark = True  # fixed image sizes: let cuDNN pick its fastest kernels
    fast = precision in ("auto", "tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    if precision in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


# A failed CPU allocation is a plain RuntimeError from torch's allocator, told apart by its text.
CPU_ALLOCATION_FAILED = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA, MPS), a failed CPU allocation in torch, or Python's MemoryError."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and (CPU_ALLOCATION_FAILED in str(exc) or "MPS backend out of memory" in str(exc))
    )


def out_of_memory_message(size: int | None, device: torch.device | str, shape: tuple[int, int] | None = None) -> str:
    """What failed and what to do, e.g. '--size 2048 (2048x1536) needs more GPU memory than
    cuda:0 has free; try --size 1024 or --device cpu'. `shape` is (height, width)."""
    device = pick_device(device) if isinstance(device, str) else device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    what = f"--size {size}" if size else "this job"
    if shape is not None:
        what += f" ({shape[1]}x{shape[0]})"
    smaller = [f"--size {max(16, size // 2)}"] if size and size > 16 else []
    if device.type == "cpu":
        remedy = " or ".join(smaller) or "closing other programs"
        return f"{what} needs more memory than this machine has free; try {remedy}"
    return f"{what} needs more GPU memory than {device} has free; try {' or '.join([*smaller, '--device cpu'])}"
