"""Runs one `stylize` command stopped right after each of its atomic renames, then resumed.

Used by tests/test_commit_points.py as `python tests/commit_driver.py SPEC.json`: a script, not a
test module. Each run is a child forked from this process (tests/cli_fork.py), which imports
torch and the package once.

SPEC (JSON): argv (with "{case}" standing for the case's own directory), cases (a directory),
sample (at most this many stop points besides the last ten) or window (two regular expressions:
every rename from the first path matching the one to the last matching the other), parallel
(cases at once), timeout (seconds for one run). For the reference run and each stop point N
(never a report page's rename) it records, in CASES/summary.json: the exit statuses of the stopped
run and of the resumed one, and the files each run placed under a final name, in order
(pipeline.atomic.replace's count log).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

from cli_fork import atomic, fork_cli

REPORT = re.compile(r"/report[^/]*\.html$|/report-files/")  # a job's report page and its files


def run_child(argv: list[str], *, exit_after: int, renames: Path, output: Path, timeout: float) -> int:
    """Run the CLI in a forked child, stopped by os._exit right after its `exit_after`-th rename
    (0: never); return its exit status (-SIGNAL if a signal ended it)."""

    def count_renames() -> None:
        os.environ[atomic.RENAME_COUNT_ENV] = str(renames)
        atomic.EXIT_AFTER_RENAMES = exit_after
        atomic._renames = 0

    return wait(fork_cli(argv, output=output, prepare=count_renames), timeout, output)


def wait(pid: int, timeout: float, output: Path) -> int:
    """The child's exit status; a child that outlives `timeout` is killed and reported."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(delay)
        delay = min(0.05, delay * 2)


def renamed(path: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


def run_case(spec: dict, name: str, stop_at: int) -> dict:
    """The stopped run, then the same command again; what each did."""
    case = Path(spec["cases"]) / name
    case.mkdir(parents=True, exist_ok=True)
    argv = [arg.replace("{case}", str(case)) for arg in spec["argv"]]
    result = {"case": str(case), "stop_at": stop_at}
    runs = [("stopped", stop_at)] if stop_at else []
    for run, exit_after in (*runs, ("resumed" if stop_at else "reference", 0)):
        log, output = case.parent / f"{name}.{run}.renames", case.parent / f"{name}.{run}.out"
        result[run] = {
            "status": run_child(argv, exit_after=exit_after, renames=log, output=output, timeout=spec["timeout"]),
            "renamed": renamed(log),
            "output": output.read_text(errors="replace"),
        }
    return result


def stop_points(total: int, sample: int) -> list[int]:
    """Every rename up to `sample` of them; beyond, `sample` evenly spaced plus the last ten."""
    if total <= sample:
        return list(range(1, total + 1))
    spaced = {1 + round(i * (total - 1) / (sample - 1)) for i in range(sample)}
    return sorted(spaced | set(range(total - 9, total + 1)))


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    reference = run_case(spec, "reference", 0)
    summary = {"reference": reference, "cases": []}
    # The report pages are no stop points: they are rebuilt from the records at any time (a kill
    # while one is written is the random-kill test's), and each would double the runs.
    job_renames = [n for n, path in enumerate(reference["reference"]["renamed"], 1) if not REPORT.search(path)]
    if "window" in spec:  # every rename from the first path matching one pattern to the last matching the other
        paths = [reference["reference"]["renamed"][n - 1] for n in job_renames]
        first = next(k for k, path in enumerate(paths) if re.search(spec["window"][0], path))
        last = max(k for k, path in enumerate(paths) if re.search(spec["window"][1], path))
        points = job_renames[first : last + 1]
    else:
        points = [job_renames[i - 1] for i in stop_points(len(job_renames), spec["sample"])]
    summary["job_renames"] = job_renames
    running: dict[int, Path] = {}  # pid of a case's process -> where it writes its result
    for n in points:
        while len(running) >= spec["parallel"]:
            reap(running, summary, spec)
        result_path = Path(spec["cases"]) / f"stop-{n:04d}.json"
        pid = os.fork()
        if pid == 0:
            try:
                result = run_case(spec, f"stop-{n:04d}", n)
            except BaseException:  # noqa: BLE001  (reported by the test, with the traceback)
                result = {"stop_at": n, "error": traceback.format_exc()}
            try:
                result_path.write_text(json.dumps(result))
            finally:
                os._exit(0)
        running[pid] = result_path
    while running:
        reap(running, summary, spec)
    summary["cases"].sort(key=lambda case: case["stop_at"])
    (Path(spec["cases"]) / "summary.json").write_text(json.dumps(summary, indent=1))


def reap(running: dict[int, Path], summary: dict, spec: dict) -> None:
    """Wait for one case's process to end (each run in it has its own timeout)."""
    deadline = time.monotonic() + 3 * spec["timeout"]
    while True:
        for pid, result_path in list(running.items()):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                del running[pid]
                summary["cases"].append(json.loads(result_path.read_text()))
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"a case ran over {3 * spec['timeout']} s: {sorted(map(str, running.values()))}")
        time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1])
