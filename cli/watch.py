"""Watching the Prefect server while a run goes on: if it stops answering, say so and stop.

Without a server the flow cannot record anything: every task fails at once and Prefect's client
retries for minutes before a long traceback. The watch polls ``/api/health``; after
``misses`` failed polls in a row it prints one line (the run is resumable) and ends the
process with exit status 1 at once. Jobs in flight are lost, not half-written: a member is
marked done only after its data is flushed, so the rerun generates exactly the missing ones.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable


class ServerWatch:
    """Polls ``api_url`` every ``interval`` seconds in a thread while the block runs."""

    def __init__(
        self,
        api_url: str,
        run_id: str,
        *,
        interval: float = 2.0,
        misses: int = 3,
        before_exit: Callable[[], None] | None = None,
    ) -> None:
        self.api_url = api_url
        self.run_id = run_id
        self.interval = interval
        self.misses = misses
        self.before_exit = before_exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="priorflow-server", daemon=True)

    def _watch(self) -> None:
        from flows.server import api_healthy

        missed = 0
        while not self._stop.wait(self.interval):
            missed = 0 if api_healthy(self.api_url, timeout=self.interval) else missed + 1
            if missed >= self.misses and not self._stop.is_set():
                self._lost()

    def _lost(self) -> None:
        if self.before_exit is not None:
            with contextlib.suppress(Exception):  # the message matters more than the display
                self.before_exit()
        message = (
            f"error: the Prefect server at {self.api_url} stopped answering during the run;"
            f" start it again and run with --run-id {self.run_id} to resume (done members are"
            " kept)\n"
        )
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        # One write to the descriptor, after a newline: another thread (Prefect's API log
        # handler, failing now) may have left half a line there; this one starts its own.
        os.write(sys.stderr.fileno(), ("\n" + message).encode())
        os._exit(1)

    def __enter__(self) -> ServerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
