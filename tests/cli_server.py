"""A server of `stylize` runs, each a child forked from this process (tests/cli_fork.py), for tests
that start, kill and restart jobs many times (tests/test_crash_resume.py): each run then costs
the job, not the interpreter's start and torch's import.

Run as `python tests/cli_server.py`. Requests, one JSON line each on stdin:
{"argv": [...], "output": PATH} starts `stylize ARGV` with its stdout and stderr going to PATH.
Replies, one JSON line each on stdout: {"started": PID} for each request, in order, and
{"ended": PID, "status": N} once that child has ended (N: its exit status, -SIGNAL if a signal
ended it). The test signals a child by its pid itself. At the end of stdin the children still
running are killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from pathlib import Path

from cli_fork import fork_cli

POLL_SECONDS = 0.005  # how soon an ended child is reported


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def reap(children: set[int]) -> None:
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)
            reply({"ended": pid, "status": os.waitstatus_to_exitcode(status)})


def main() -> None:
    children: set[int] = set()
    pending = b""
    while True:
        reap(children)
        if not select.select([0], [], [], POLL_SECONDS)[0]:
            continue
        data = os.read(0, 1 << 16)
        if not data:
            break
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = fork_cli(request["argv"], output=Path(request["output"]))
            children.add(pid)
            reply({"started": pid})
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
