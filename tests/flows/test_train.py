"""The ``train_reference`` flow on a real Prefect server: trains, reports, resumes."""

from __future__ import annotations

import pytest

from priorflow.models.loading import load_model
from tests.prefect_fixtures import prefect_api, read_flow_artifacts, read_task_runs, tiny_world

__all__ = ["prefect_api", "tiny_world"]

SETTINGS = {
    "steps": 4,
    "batch_size": 2,
    "blanket_size": 4,
    "eval_every": 2,
    "backbone": {"channels": [4, 8], "embedding": 8},
    "extra": {"val_every_days": 5, "val_blankets": 4, "warmup": 1},
    "log_every": 1,
}


@pytest.mark.integration
def test_train_reference_flow(prefect_api, tiny_world, tmp_path):
    from flows.train import train_reference

    out = tmp_path / "model"
    state = train_reference(
        archive=str(tiny_world["archive"]), out=str(out), return_state=True, **SETTINGS
    )
    assert state.is_completed()
    record = state.result()
    assert record["step"] == 4 and record["resumed_from"] == 0
    model = load_model(out)
    assert (out / model.card.archive).resolve() == tiny_world["archive"].resolve()
    assert model.card.metadata["command"].startswith("flow train_reference(")

    flow_run_id = state.state_details.flow_run_id
    tasks = read_task_runs(flow_run_id)
    assert [t.name for t in tasks] == [f"train-{out}"]
    keys = {a.key for a in read_flow_artifacts(flow_run_id)}
    assert {"training-progress", "training-summary"} <= keys

    # a second run of the flow with more steps continues the first
    more = {**SETTINGS, "steps": 6}
    again = train_reference(archive=str(tiny_world["archive"]), out=str(out), **more)
    assert again["resumed_from"] == 4 and again["step"] == 6
