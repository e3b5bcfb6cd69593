"""Errors that reach the user as one line and an exit status, never as a traceback."""


class PipelineError(Exception):
    """A problem the user can fix; the message names the file and what is wrong with it."""

    exit_code = 1


class InputError(PipelineError):
    """Bad input: a missing, unreadable or unsupported file, or an option out of range."""

    exit_code = 2
