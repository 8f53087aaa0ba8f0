"""The generation task's Prefect parts: progress artifacts and artifact keys (no server)."""

from __future__ import annotations

import tasks.generate as task_module
from tasks.generate import ProgressReporter, worker_name
from tasks.keys import artifact_key


def test_artifact_keys_are_lowercase_letters_digits_and_dashes():
    assert artifact_key("priorflow", "Run_1", "72h", "members") == "priorflow-run-1-72h-members"
    assert artifact_key("x", "gen-72h-2000-04-03T00-m1", "") == "x-gen-72h-2000-04-03t00-m1"
    assert artifact_key("a..b", "--c--") == "a-b-c"


def test_no_worker_name_outside_a_dask_worker():
    assert worker_name() is None


def test_progress_reports_by_time_and_at_the_end(monkeypatch):
    updates = []
    monkeypatch.setattr(task_module, "create_progress_artifact", lambda *a, **k: "id")
    monkeypatch.setattr(
        task_module, "update_progress_artifact", lambda i, p, **k: updates.append(p)
    )
    now = [0.0]
    reporter = ProgressReporter(key="k", description="d", every=2.0, clock=lambda: now[0])
    for step in range(1, 101):  # 100 steps, 0.5 s each
        now[0] += 0.5
        reporter(step, 100)
    assert updates == [float(p) for p in range(4, 101, 4)]  # every 2 s, then the last step
    updates.clear()
    reporter = ProgressReporter(key="k", description="d", every=2.0, clock=lambda: now[0])
    for step in range(1, 4):  # a fast job: only its end is reported
        reporter(step, 3)
    assert updates == [100.0]
