"""The run config's schema: :class:`RunConfig` and its sections (every field documented here).

After validation ``trajectory_sizes`` is a sorted list of ints, ``start_dates`` a list of
datetimes (in the given order), ``diffusion.sampler.config`` is completed with the sampler's
defaults, and ``run_id`` is set (default: :func:`make_run_id`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, field_validator, model_validator

from priorflow.config.check import CheckConfig
from priorflow.config.hardware import Hardware
from priorflow.config.messages import Problem, Strict, show
from priorflow.config.values import RUN_ID, format_sizes
from priorflow.core.blanket import FoldMode
from priorflow.core.dates import parse_start_date, parse_trajectory_sizes
from priorflow.core.precision import Precision
from priorflow.core.samplers import SAMPLERS, SamplerOptionError, check_sampler_config
from priorflow.errors import ConfigError
from priorflow.models.card import ModelTarget

DEFAULT_OUTPUT_DIR = "runs"
MAX_STEPS = 10_000  # sampler steps (Appa's default is 64)
MAX_MEMBERS = 10_000  # members per start date
MAX_START_DATES = 10_000
MAX_MEMBERS_PER_TASK = 256
StrictInt = Annotated[int, Field(strict=True)]


class SamplerSettings(Strict):
    """``diffusion.sampler``: which sampler and its settings (checked by the sampler itself)."""

    type: str = Field(default="lms", description=f"sampler: {', '.join(SAMPLERS)} (default lms)")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="sampler settings, e.g. {order: 3} for lms; completed with the defaults",
    )

    @field_validator("config", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("type")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise Problem(f"{show(value)} — choose one of {_choices(SAMPLERS)}")
        return value

    @model_validator(mode="after")
    def _check_options(self) -> SamplerSettings:
        try:
            self.config = check_sampler_config(self.type, self.config)
        except SamplerOptionError as error:
            raise ConfigError(f"diffusion.sampler.config.{error.key}: {error.reason}") from None
        return self


def _choices(names: tuple[str, ...]) -> str:
    """``a, b or c``."""
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


class Diffusion(Strict):
    """``diffusion``: number of denoising steps and the sampler."""

    num_steps: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        description="sampler steps; null = the model card's denoising_steps",
    )
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)


class BlockNames(Strict):
    """``blocks``: Prefect blocks named instead of paths and settings (see the module docstring).

    Only the names are kept after validation; their values are already in the config.
    """

    model: str | None = Field(
        default=None, description="a prior-model block: sets model_path and model_target"
    )
    archive: str | None = Field(default=None, description="a latent-archive block: sets archive")
    cluster: str | None = Field(
        default=None, description="a cluster-profile block: the defaults of hardware"
    )


class RunConfig(Strict):
    """A validated run config. See the module docstring for the YAML and the path rules.

    After validation ``trajectory_sizes`` is a sorted list of ints, ``start_dates`` a list of
    datetimes (in the given order), ``diffusion.sampler.config`` is completed with the sampler's
    defaults, and ``run_id`` is set (default: :func:`make_run_id`).
    """

    model_path: str = Field(
        description="model directory (card.yaml + model_best.pt/model_last.pt)"
    )
    model_target: ModelTarget = Field(default="best", description="checkpoint to load")
    diffusion: Diffusion = Field(default_factory=Diffusion)
    trajectory_sizes: list[int] = Field(
        description='states per trajectory: "72", "24,48" or the inclusive range "24-26"'
    )
    num_samples_per_date: StrictInt = Field(
        default=1, ge=1, le=MAX_MEMBERS, description="members per start date"
    )
    start_dates: list[datetime] = Field(description='start dates, "YYYY-MM-DD Hh"')
    blanket_overlap: StrictInt = Field(
        ge=0, description="states shared by neighbouring blankets, 0 <= overlap < blanket_size"
    )
    precision: Precision | None = Field(
        default=None, description="backbone precision; null = the model's training precision"
    )
    hardware: Hardware = Field(default_factory=Hardware)
    seed: StrictInt = Field(
        default=0, ge=0, description="run seed: every job's seed derives from it"
    )
    output_dir: str = Field(
        default=DEFAULT_OUTPUT_DIR,
        description="runs are written to <output_dir>/<run_id>/; relative to the config file's"
        ' folder (default runs there); "{model_path}/prior" = under the model directory',
    )
    run_id: str | None = Field(
        default=None, description="name of the run; reuse one to resume it; null = timestamp+hash"
    )
    archive: str | None = Field(
        default=None, description="latent archive (zarr); null = the one named in the model card"
    )
    fold_mode: FoldMode = Field(
        default="symmetrical", description="how blanket outputs are folded into a trajectory"
    )
    members_per_task: StrictInt = Field(
        default=1,
        ge=1,
        le=MAX_MEMBERS_PER_TASK,
        description="members of one size sampled together in one task (one batch per backbone"
        " call: fuller GPUs); each is written and marked on its own",
    )
    blanket_batch: StrictInt | None = Field(
        default=None, ge=1, description="blankets per backbone call; null = all at once"
    )
    check: CheckConfig = Field(
        default_factory=CheckConfig,
        description="prior-check thresholds (priorflow.evaluation.check)",
    )
    blocks: BlockNames = Field(
        default_factory=BlockNames, description="Prefect blocks named instead of paths/settings"
    )

    @field_validator("trajectory_sizes", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> list[int]:
        if value is None or isinstance(value, float | dict):
            raise Problem(f'{show(value)} — sizes in states, e.g. "72", "24,48" or "24-26"')
        return parse_trajectory_sizes(value, field="trajectory_sizes")

    @field_validator("start_dates", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> list[datetime]:
        if isinstance(value, str | date):
            value = [value]
        if not isinstance(value, list | tuple):
            raise Problem(f'{show(value)} — a list of dates, e.g. ["2000-04-03 0h"]')
        if not value:
            raise Problem('empty — give at least one start date, e.g. ["2000-04-03 0h"]')
        if len(value) > MAX_START_DATES:
            raise Problem(f"{len(value)} dates — at most {MAX_START_DATES}; split the run")
        dates: list[datetime] = []
        for i, item in enumerate(value):
            if isinstance(item, date) and not isinstance(item, datetime):
                item = datetime(item.year, item.month, item.day)
            if not isinstance(item, str | datetime):
                raise ConfigError(
                    f'start_dates[{i}]: {show(item)} — a date such as "2000-04-03 0h"'
                )
            parsed = parse_start_date(item, field=f"start_dates[{i}]")
            if parsed in dates:
                raise ConfigError(
                    f"start_dates[{i}]: {show(item)} — repeats start_dates[{dates.index(parsed)}];"
                    " each start date once (members come from num_samples_per_date)"
                )
            dates.append(parsed)
        return dates

    @field_validator("run_id", mode="before")
    @classmethod
    def _run_id_template(cls, value: Any) -> Any:
        """``nightly-{now:%Y%m%d}`` -> ``nightly-20260314`` (local time, when loaded)."""
        if isinstance(value, str) and "{" in value:
            try:
                return value.format(now=datetime.now())
            except (KeyError, IndexError, ValueError, AttributeError):
                raise Problem(
                    f"{show(value)} — a template may only use {{now:FORMAT}}, e.g."
                    " nightly-{now:%Y%m%d}"
                ) from None
        return value

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str | None) -> str | None:
        if value is not None and not RUN_ID.match(value):
            raise Problem(
                f"{show(value)} — letters, digits, '.', '_' and '-' only (it names a directory)"
            )
        return value

    @field_validator("check", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _default_run_id(self) -> RunConfig:
        if self.run_id is None:
            self.run_id = make_run_id(self)
        return self

    # -- derived values -----------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<run_id>``."""
        return Path(self.output_dir) / str(self.run_id)

    def resolved(self) -> dict[str, Any]:
        """The config as plain YAML/JSON data, every default filled in (reloads to an equal config).

        Start dates are written ``"YYYY-MM-DD Hh"`` and sizes as a string (``"24-26"``). The
        block names are left out: their values are in the config (it reloads without Prefect).
        """
        data = self.model_dump(mode="json", exclude={"blocks"})
        data["trajectory_sizes"] = format_sizes(self.trajectory_sizes)
        data["start_dates"] = [f"{d:%Y-%m-%d} {d.hour}h" for d in self.start_dates]
        return data

    def to_yaml(self) -> str:
        """:meth:`resolved` as YAML text (times and sizes stay quoted strings)."""
        return yaml.safe_dump(self.resolved(), sort_keys=False, allow_unicode=True)


def make_run_id(config: RunConfig, now: datetime | None = None) -> str:
    """A readable, sortable run id: ``20260314-153012-1a2b3c`` (local time + a hash of the config)."""
    now = now or datetime.now()
    data = config.model_dump(mode="json", exclude={"run_id"})
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:6]
    return f"{now:%Y%m%d-%H%M%S}-{digest}"
