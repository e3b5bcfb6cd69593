"""Ctrl-C (SIGINT) and SIGTERM stop a job between writes, never in the middle of one.

`handled()` (entered by the command line, not by the library) makes both signals raise in the main
thread, like Python's own Ctrl-C: SIGINT raises KeyboardInterrupt, SIGTERM raises Terminated,
a KeyboardInterrupt too, so that every `except KeyboardInterrupt` that records progress handles
both. Inside a `deferred()` block (each atomic write is one) a signal is only remembered, and
raised when the block ends: the file being written is complete under its name, or absent.

A signal meant for the job reaches its child processes too: Ctrl-C in a terminal and `kill -TERM
-PGID` go to the whole process group, so ffmpeg (or a worker) may fail because of the very signal
that this process is holding back. A block that fails while a signal is pending therefore stops
the job as interrupted (exit 130/143, work kept), not with the child's error: the failure was the
signal's doing, and whatever else it was, the next run meets it again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM: the job stops as on Ctrl-C, keeping its work; exit status 128 + 15."""

    exit_code = 128 + signal.SIGTERM


INTERRUPT_EXIT = 128 + signal.SIGINT

_depth = 0  # nesting of deferred() blocks in the main thread (the only one that gets signals)
_pending: int | None = None


def exception_for(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def exit_code(exc: BaseException | None) -> int:
    """143 for Terminated, else 130 (the shell's 128 + SIGINT)."""
    return getattr(exc, "exit_code", INTERRUPT_EXIT)


def pending() -> int | None:
    """The signal a deferred() block is holding back, if one came (for code that must tell a
    child process killed by it from one that failed)."""
    return _pending


def child_signal(returncode: int | None) -> int | None:
    """SIGINT or SIGTERM when a child process's exit status says it died of one, else None."""
    if returncode is not None and -returncode in (signal.SIGINT, signal.SIGTERM):
        return -returncode
    return None


def _handler(signum: int, frame) -> None:
    global _pending
    if _depth:
        _pending = signum
        return
    raise exception_for(signum)


@contextmanager
def handled() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as above inside the block; the previous handlers come back
    after it (main() may run inside another program, e.g. the tests). A signal the parent set
    to be ignored stays ignored (`stylize ... &` in a script ignores Ctrl-C, as the shell means)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)
    if previous[signal.SIGTERM] == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends; then raise the one that came. If the
    block failed meanwhile, the signal still stops the job (see the module's docstring), with the
    failure as its cause. A no-op in other threads."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    except BaseException as exc:
        if _depth == 1 and _pending is not None:
            signum, _pending = _pending, None
            if not isinstance(exc, KeyboardInterrupt):
                raise exception_for(signum) from exc
        raise
    finally:
        _depth -= 1
    if _depth == 0 and _pending is not None:
        signum, _pending = _pending, None
        raise exception_for(signum)
