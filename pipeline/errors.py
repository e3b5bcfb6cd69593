"""Errors that reach the user as one line and an exit status, never as a traceback."""

import errno

# Write failures that no other file of the job would escape: the job stops instead of recording
# one failure per file (see WriteError.stops_the_job).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
STOPS_THE_JOB = (*DISK_FULL, errno.EROFS, errno.EIO)


class PipelineError(Exception):
    """A problem the user can fix; the message names the file and what is wrong with it."""

    exit_code = 1


class InputError(PipelineError):
    """Bad input: a missing, unreadable or unsupported file, or an option out of range."""

    exit_code = 2


class WriteError(PipelineError):
    """Writing a result or a record failed during the run (disk full, read-only, I/O error).
    The file under its final name is untouched (writes are atomic), so the job resumes."""

    def __init__(self, path, exc: OSError):
        self.errno = exc.errno
        if exc.errno in DISK_FULL:
            message = f"{path}: no space left on the device; free some space and run the same command again"
        else:
            message = f"{path}: could not write ({exc.strerror or exc})"
        super().__init__(message)

    @property
    def stops_the_job(self) -> bool:
        """True for a failure of the file system rather than of this one file."""
        return self.errno in STOPS_THE_JOB


def one_line(text: str) -> str:
    """Messages name files, and file names may hold newlines or bytes that are not UTF-8:
    escape them, so that a message stays one printable line on stderr, in logs and tables."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\r", "\\r").replace("\n", "\\n")
