"""`stylize` commands run in processes forked from one that has imported torch and the package once.

A tiny test job costs less than the interpreter's start (about 3 s, 2.3 of them torch's import),
so the tests that run a job many times (tests/commit_driver.py, tests/cli_server.py) import
everything once and fork a child per run. The child runs the CLI's `main` exactly as `stylize`
would, then ends with os._exit. Forking is safe as long as the forking process stays
single-threaded and has run no torch operation (torch's thread pools start on first use).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# After the path. The report modules (matplotlib) now, as torch: every job writes its report.
from pipeline import archive, atomic, cli, report_archive, report_video  # noqa: E402, F401

FAILED = 98  # the status of a child whose run raised past the CLI's own handling


def fork_cli(argv: list[str], *, output: Path, prepare: Callable[[], None] | None = None) -> int:
    """Fork a child that runs `stylize ARGV`, stdin from /dev/null, stdout and stderr into
    `output`, after `prepare()` (in the child); returns its pid."""
    sys.stdout.flush()  # nothing buffered before the fork is written twice
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    status = FAILED  # the child: never returns
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if prepare is not None:
            prepare()
        status = cli.main(argv)
    except BaseException:  # noqa: BLE001  (anything at all must end in os._exit)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
