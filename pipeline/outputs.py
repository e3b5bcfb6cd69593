"""The check every job makes of a file it will write, before any work: one rule, so that the image
and video jobs refuse the same outputs with the same words.

(The photo archive writes a tree, not one named file: tree.replaceable decides there, per image,
from the ledger of the files the job wrote itself.)"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import InputError
from .manifest import writable_directory


def check_output(output: Path, *, inputs: Iterable[Path], may_replace: bool, example: str) -> None:
    """Refuse an output that is one of the job's inputs, a directory, or an existing file the job
    may not replace (`may_replace`: --overwrite, or a file the job itself wrote), and make sure
    its folder exists and can be written. `example`: a file name to suggest inside a directory."""
    resolved = output.resolve()
    for path in inputs:
        if path.exists() and path.resolve() == resolved:
            raise InputError(f"{output}: output is the same file as an input")
    if output.is_dir():
        raise InputError(f"{output}: output is a directory; give a file name such as {output / example}")
    if output.exists() and not may_replace:
        raise InputError(f"{output}: output exists (use --overwrite to replace it)")
    writable_directory(output.parent, "output")
