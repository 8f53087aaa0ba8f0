"""The terminal progress of a run: a bar of its members, polling the store's done marks."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from priorflow.store import missing_jobs


class RunProgress:
    """A progress bar of a run's members, polling the store's done marks in a thread."""

    def __init__(self, plan: Any, interval: float = 0.5) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.plan = plan
        self.interval = interval
        self.bar = Progress(
            "[bold]members",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self.task = self.bar.add_task("members", total=plan.num_jobs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="priorflow-progress", daemon=True)

    def done(self) -> int:
        return self.plan.num_jobs - len(missing_jobs(self.plan.run_dir, self.plan))

    def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the store may not exist yet
                self.bar.update(self.task, completed=self.done())
            self._stop.wait(self.interval)

    def __enter__(self) -> RunProgress:
        self.bar.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.bar.update(self.task, completed=self.done())
        finally:
            self.bar.stop()
