"""The terminal progress of a run: members done (the store's marks) and members in flight.

Two sources, polled in a thread: the done marks in the run's store, and the Prefect progress
artifacts the generation tasks update with their sampler step (``/api/artifacts/filter``, the
artifacts created since this process started). What is shown depends on where stdout goes:

- a terminal: a rich live display, the members bar with one row per task in flight (its name and
  its sampler step). Prefect's log lines of this process are printed above it through the live
  console (never glued to the bar), and each member that finishes gets one line there too.
- anything else (a pipe, a file, CI): plain lines, one each time the count of done members
  changes, ``members 3/8 done; in flight: gen-72h-...-m1 step 12/64``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from priorflow.store import missing_jobs
from tasks.keys import artifact_key

# Per task in flight: (label, step, steps).
InFlight = dict[str, tuple[str, int, int]]


def progress_keys(plan: Any) -> dict[str, str]:
    """``{progress artifact key: job name}`` for every job of the plan (a task of several
    members reports under its first member's key)."""
    return {
        artifact_key("priorflow", plan.run_id, job.name, "progress"): job.name for job in plan.jobs
    }


def read_in_flight(api_url: str, plan: Any, since: datetime, timeout: float = 2.0) -> InFlight:
    """The run's tasks with a progress artifact created since ``since`` and not at 100 %."""
    keys = progress_keys(plan)
    prefix = artifact_key("priorflow", plan.run_id)
    body = {
        "artifacts": {"key": {"like_": f"{prefix}-%-progress"}, "type": {"any_": ["progress"]}},
        "sort": "CREATED_DESC",
        "limit": 200,
    }
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/artifacts/filter",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        artifacts = json.loads(response.read())
    steps = plan.spec.num_steps
    found: InFlight = {}
    for artifact in artifacts:
        name = keys.get(artifact.get("key"))
        created = datetime.fromisoformat(artifact["created"].replace("Z", "+00:00"))
        if name is None or name in found or created < since:
            continue
        percent = float(artifact.get("data") or 0.0)
        if percent < 100.0:
            found[name] = (name, round(percent * steps / 100.0), steps)
    return found


def status_line(done: int, total: int, in_flight: InFlight) -> str:
    """The plain line: ``members 3/8 done; in flight: gen-...-m1 step 12/64, ...``."""
    line = f"members {done}/{total} done"
    if in_flight:
        tasks = ", ".join(
            f"{label} step {step}/{steps}" for label, step, steps in in_flight.values()
        )
        line += f"; in flight: {tasks}"
    return line


class _AboveTheLive(logging.Handler):
    """Prints what a Prefect console handler would print, through the live display's console."""

    def __init__(self, original: logging.Handler, console: Any) -> None:
        super().__init__(level=original.level)
        self.original = original
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.text import Text

        try:
            inner = getattr(self.original, "console", None)
            if inner is None:
                text = Text(self.original.format(record))
            else:
                with inner.capture() as captured:
                    self.original.emit(record)
                text = Text.from_ansi(captured.get().rstrip("\n"))
            self.console.print(text, soft_wrap=True)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def logs_above(console: Any) -> Iterator[None]:
    """Route Prefect's console log handlers of this process through ``console`` meanwhile."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    swapped: list[tuple[logging.Logger, logging.Handler, logging.Handler]] = []
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, PrefectConsoleHandler):
                wrapper = _AboveTheLive(handler, console)
                logger.removeHandler(handler)
                logger.addHandler(wrapper)
                swapped.append((logger, handler, wrapper))
    try:
        yield
    finally:
        for logger, handler, wrapper in swapped:
            logger.removeHandler(wrapper)
            logger.addHandler(handler)


class RunProgress:
    """Members done and in flight while a run goes on (see the module docstring)."""

    def __init__(
        self,
        plan: Any,
        api_url: str | None = None,
        *,
        interval: float = 0.5,
        terminal: bool | None = None,
        stream: Any = None,
    ) -> None:
        self.plan = plan
        self.api_url = api_url
        self.interval = interval
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.since = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="priorflow-progress", daemon=True)
        self._done: set[str] = set()
        self._rows: dict[str, Any] = {}
        self._shown: str | None = None
        self.bar: Any = None
        if self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress(
                "{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self.task = self.bar.add_task("[bold]members", total=plan.num_jobs)

    def done_jobs(self) -> set[str]:
        missing = {job.name for job in missing_jobs(self.plan.run_dir, self.plan)}
        return {job.name for job in self.plan.jobs} - missing

    def in_flight(self) -> InFlight:
        if self.api_url is None:
            return {}
        try:
            return read_in_flight(self.api_url, self.plan, self.since)
        except Exception:  # the server busy or gone: the watch reports a lost server
            return {}

    def _refresh(self) -> None:
        try:
            done = self.done_jobs()
        except Exception:  # the store may not exist yet
            return
        flight = {name: row for name, row in self.in_flight().items() if name not in done}
        new = sorted(done - self._done)
        self._done = done
        if self.terminal:
            self._draw(done, flight, new)
        else:
            line = status_line(len(done), self.plan.num_jobs, flight)
            if line.split(";")[0] != (self._shown or "").split(";")[0]:
                print(line, file=self.stream, flush=True)
                self._shown = line

    def _draw(self, done: set[str], flight: InFlight, new: list[str]) -> None:
        for name in new:
            self.bar.console.print(f"[green]done[/] {name}", highlight=False)
        self.bar.update(self.task, completed=len(done))
        for name in [n for n in self._rows if n not in flight]:
            self.bar.remove_task(self._rows.pop(name))
        for name, (label, step, steps) in flight.items():
            if name not in self._rows:
                self._rows[name] = self.bar.add_task(f"  {label}", total=steps)
            self.bar.update(self._rows[name], completed=step)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()

    def stop_display(self) -> None:
        """Stop the live display (before something else writes to the terminal)."""
        if self.bar is not None:
            self.bar.stop()

    def __enter__(self) -> RunProgress:
        self._logs = contextlib.ExitStack()
        if self.terminal:
            self.bar.start()
            self._logs.enter_context(logs_above(self.bar.console))
        else:
            self._refresh()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            with contextlib.suppress(Exception):
                self._refresh()
                for name in list(self._rows):
                    self.bar.remove_task(self._rows.pop(name))
        finally:
            self._logs.close()
            self.stop_display()
