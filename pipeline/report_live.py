"""A job's report.html kept current while the job runs: rewritten from the job's loop at most every
REPORT_SECONDS (the page's own refresh period), and once more when the run ends, however it ends.

The report is read from the job's records (report_video, report_archive), so writing it is never
part of the job's work: a page that cannot be written (a full disk, an unreadable record, a bug)
is a warning in the log and the job goes on; `stylize report DIR` rebuilds it at any time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, one_line
from .report_html import REFRESH_SECONDS

REPORT_SECONDS = REFRESH_SECONDS  # a running job's page is rewritten at most this often
# write(running, budget) -> the page's path; budget: seconds of new thumbnails or measurements
Writer = Callable[[bool, float], Path]


class LiveReport:
    def __init__(self, write: Writer, *, budget: float, warn: Callable[[str], None]):
        self._write, self.budget, self.warn = write, budget, warn
        self.path: Path | None = None  # the page, once written and as long as writes succeed
        self.written = -math.inf  # the first call to when_due writes the first page
        self.finished = False  # the last page is written

    def when_due(self) -> None:
        """From the job's loop after each finished unit: a new page if the last is REPORT_SECONDS old."""
        if time.monotonic() - self.written >= REPORT_SECONDS:
            self.write(running=True, budget=self.budget)

    @contextmanager
    def last_page(self, budget: Callable[[], float]) -> Iterator[None]:
        """After the block, however it ends (the records then hold the run's final state): the
        page that stays, with budget() seconds for what is still missing, unless the block wrote it.
        A job refused before its first page (InputError) writes none: it leaves the file system as
        it found it."""
        refused = False
        try:
            yield
        except InputError:
            refused = self.written == -math.inf
            raise
        finally:
            if not (self.finished or refused):
                self.finish(budget())

    def finish(self, budget: float) -> None:
        """The page that stays, written now: a job whose last step removes what the page is made
        from (a video's --clean) writes it before."""
        self.finished = True
        self.write(running=False, budget=budget)

    def write(self, *, running: bool, budget: float) -> None:
        try:
            self.path = self._write(running, budget)
        except Exception as exc:  # noqa: BLE001 (the page is never the job's end)
            self.path = None
            self.warn(f"the report could not be written: {one_line(f'{type(exc).__name__}: {exc}')}")
        finally:
            self.written = time.monotonic()
