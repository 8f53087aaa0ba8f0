"""Fixtures for the flow, task-runner and CLI tests: a real Prefect server and a tiny world.

Register this module as a plugin (``pytest_plugins = ["tests.prefect_fixtures"]`` in
``tests/conftest.py``) or import the fixtures into a test module; either way the server and the
world are made once per test process.

- ``prefect_api`` (session): ``prefect_test_harness`` (a real server subprocess on a temporary
  SQLite database), with ``PREFECT_HOME`` and result storage in temporary folders, and
  ``PREFECT_API_URL`` exported so that Dask worker processes and ``priorflow`` subprocesses use
  the same server (never Prefect's ephemeral mode).
- ``tiny_world`` (session): the exact model of a small synthetic world (states ``(2, 4, 8)``,
  blanket size 4) and a one-month archive of that world, written once.
- :class:`FailingBackbone`: the exact backbone, raising for one day of the month: a card naming it
  makes exactly the jobs starting on that day fail (a test-only model, not a production hook).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

TINY_SHAPE = (2, 4, 8)
TINY_RANGE = ("2000-01-01", "2000-01-31")


# One server and one tiny world per test process, however many modules ask for them: a test
# module that imports a fixture gets its own session-scoped instance of it, and nested
# ``prefect_test_harness`` servers leave this process's event client talking to the wrong one.
_SHARED: dict[str, Any] = {}


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API URL of a real Prefect server for this test session (started once)."""
    if "api_url" in _SHARED:  # another module's instance of this fixture owns the server
        yield _SHARED["api_url"]
        return
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        get_current_settings,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    storage = home / "storage"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(storage),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    saved = {key: os.environ.get(key) for key in [*env, "PREFECT_API_URL"]}
    os.environ.update(env)
    try:
        with (
            temporary_settings(
                updates={PREFECT_HOME: home, PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage}
            ),
            prefect_test_harness(server_startup_timeout=90),
        ):
            url = get_current_settings().api.url
            os.environ["PREFECT_API_URL"] = url
            _SHARED["api_url"] = url
            try:
                yield url
            finally:
                _SHARED.pop("api_url", None)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"model", "archive", "root"}``: the exact model (K=4) and a January 2000 archive."""
    if "tiny_world" in _SHARED:
        return _SHARED["tiny_world"]
    from priorflow.data.synthetic import SyntheticWorld
    from priorflow.data.synthetic_archive import write_synthetic_archive
    from priorflow.models.exact import write_exact_model

    root = tmp_path_factory.mktemp("tiny-world")
    model = write_exact_model(root / "model", blanket_size=4, denoising_steps=8, shape=TINY_SHAPE)
    archive = write_synthetic_archive(
        root / "archive.zarr", *TINY_RANGE, world=SyntheticWorld(TINY_SHAPE)
    )
    _SHARED["tiny_world"] = {"model": model, "archive": archive, "root": root}
    return _SHARED["tiny_world"]


def write_run_config(path: Path, model: Path, archive: Path | None, **changes: Any) -> Path:
    """A small run config: sizes 6 and 9 (K=4, overlap 1: 2 and 3 blankets), 2 dates x 2."""
    data: dict[str, Any] = {
        "model_path": str(model),
        "diffusion": {"num_steps": 5, "sampler": {"type": "lms"}},
        "trajectory_sizes": "6,9",
        "num_samples_per_date": 2,
        "start_dates": ["2000-01-03 0h", "2000-01-10 6h"],
        "blanket_overlap": 1,
        "precision": "float32",
        "seed": 7,
        "output_dir": str(path.parent / "runs"),
        "hardware": {"backend": "local"},
    }
    if archive is not None:
        data["archive"] = str(archive)
    data.update(changes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def copy_model_with_target(source: Path, out: Path, target: str, **kwargs: Any) -> Path:
    """A copy of a model directory whose card names another backbone ``target`` (+ kwargs)."""
    import shutil

    shutil.copytree(source, out)
    card = yaml.safe_load((out / "card.yaml").read_text())
    card["backbone"]["target"] = target
    card["backbone"]["kwargs"].update(kwargs)
    (out / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return out


class FailingBackbone(torch.nn.Module):
    """The exact backbone, raising ``RuntimeError`` when a blanket holds day ``fail_day``.

    Card target ``tests.prefect_fixtures:FailingBackbone`` (an nn.Module class; kwargs: the
    world's + ``fail_day``).
    """

    def __init__(
        self, state_shape: tuple[int, ...] | None = None, fail_day: int = 10, **kwargs: Any
    ) -> None:
        from priorflow.models.exact import exact_backbone

        super().__init__()
        self.fail_day = int(fail_day)
        self.inner = exact_backbone(state_shape, **kwargs)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        if bool((dates[..., 2] == self.fail_day).any()):
            raise RuntimeError(f"injected failure: a state on day {self.fail_day}")
        return self.inner(x, c_noise, dates)

    # The checkpoint is the exact backbone's: load it into ``inner``.
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.inner.state_dict(*args, **kwargs)

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.inner.load_state_dict(state, strict=strict, assign=assign)


class KillingBackbone(FailingBackbone):
    """The exact backbone, killing its own process (as an out-of-memory kill or a segfault in
    the backbone would) when a blanket holds day ``fail_day``."""

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        if bool((dates[..., 2] == self.fail_day).any()):
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(x, c_noise, dates)


def read_flow_artifacts(flow_run_id: Any) -> list[Any]:
    """Every artifact of a flow run (its tasks' included), from the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            artifact_filter=ArtifactFilter(),
        )


def read_task_runs(flow_run_id: Any, minimum: int = 1, timeout: float = 30.0) -> list[Any]:
    """Every task run of a flow run, from the API, once the server has recorded them.

    Prefect 3 creates task runs on the client and the server records them from events, a moment
    later: poll until there are at least ``minimum`` task runs, all in a final state, and their
    number holds for one more poll (or until ``timeout``).
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    previous = None
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            final = all(run.state is not None and run.state.is_final() for run in runs)
            if len(runs) >= minimum and final and previous == len(runs):
                return runs
            if time.monotonic() > deadline:
                return runs
            previous = len(runs) if final else None
            time.sleep(0.3)
