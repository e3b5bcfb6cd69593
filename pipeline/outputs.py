"""A file a job places outside its work directory (a video job's output), and the job's record of it.

Such a file is the job's own only while its content is what the job recorded: existence proves
nothing (another job, or the user, may have put a file there since). job.json's "outputs" maps
each final path to the fingerprints the job placed there: the last finished one, and one about to
be placed. That one is recorded before the rename (DESIGN.md, "Stages, checkpoints, resume"), so
that a kill right after the rename leaves a file the next run knows, by fingerprint, as its own.
The encode stage's record ("placing", then "done", with the fingerprint) says the same for
`stylize status`.

check_output is the check every job makes of a file it will write, before any work: one rule, so
that the image and video jobs refuse the same outputs with the same words. (The photo archive
writes a tree, not one named file: tree.replaceable decides there, per image, from its ledger.)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import InputError
from .hashing import file_fingerprint
from .manifest import JobManifest, timestamp, writable_directory

STAGE = "encode"  # the stage that places the output


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


class OutputRecord:
    """The output of one job, as its manifest records it."""

    def __init__(self, manifest: JobManifest, output: Path, *, overwrite: bool = False):
        self.manifest = manifest
        self.output = Path(output)
        self.overwrite = overwrite

    @property
    def key(self) -> str:
        return str(self.output.resolve())

    def owns(self) -> bool:
        """Whether the output holds a file this job placed there (by its fingerprint)."""
        known = self.manifest.data.get("outputs", {}).get(self.key, [])
        try:
            return self.output.is_file() and file_fingerprint(self.output) in known
        except OSError:
            return False

    def refuse_to_replace(self) -> None:
        """A job replaces only files it placed itself (by fingerprint), unless --overwrite."""
        if self.overwrite or not self.output.exists() or self.owns():
            return
        if self.key in self.manifest.data.get("outputs", {}):
            raise InputError(
                f"{self.output}: output exists and is no longer the file this job wrote (use --overwrite to replace it)"
            )
        raise InputError(f"{self.output}: output exists (use --overwrite to replace it)")

    def is_finished(self, stage_hash: str) -> bool:
        """Whether the output is the file the current placing stage put there, by fingerprint:
        a file that merely exists (another job's, the user's, an older encode's) is not."""
        stage = self.manifest.stage(STAGE)
        if not self.manifest.is_current(STAGE, stage_hash) or stage.get("status") not in ("placing", "done"):
            return False
        try:
            return self.output.is_file() and file_fingerprint(self.output) == stage.get("fingerprint")
        except OSError:
            return False

    def placing(self, finished: Path, **fields) -> None:
        """Before the rename of `finished` onto the output: record it, with `fields` (what it
        holds) in the stage's record. The refusal is checked again here: another job may have
        written the output since this one started."""
        self.refuse_to_replace()
        fingerprint = file_fingerprint(finished)
        self.manifest.stage(STAGE).update(status="placing", output=self.key, fingerprint=fingerprint, **fields)
        known = self.manifest.data.setdefault("outputs", {}).setdefault(self.key, [])
        if fingerprint not in known:
            known.append(fingerprint)
        self.manifest.save()

    def placed(self) -> None:
        """After the rename: the output holds the recorded file; the files it held before are gone."""
        self.manifest.data.setdefault("outputs", {})[self.key] = [self.manifest.stage(STAGE)["fingerprint"]]
        self.manifest.update(STAGE, status="done", finished=timestamp())

    def settle(self) -> None:
        """A run killed between the rename and its record: the record catches up."""
        if self.manifest.stage(STAGE).get("status") == "placing":
            self.placed()


def output_is_recorded(data: dict) -> bool:
    """Whether the output named in a job record holds the file the job placed there."""
    stage = (data.get("stages") or {}).get(STAGE) or {}
    path = Path(stage.get("output") or (data.get("inputs") or {}).get("output") or "")
    try:
        return path.is_file() and file_fingerprint(path) == stage.get("fingerprint")
    except OSError:
        return False
