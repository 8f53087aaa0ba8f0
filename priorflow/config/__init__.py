"""The run config: a YAML file (plus ``--set key=value`` overrides) validated into :class:`RunConfig`.

The keys are those of the original generation script's config (same meaning), plus ``seed``,
``output_dir``, ``run_id``, ``archive``, ``fold_mode``, ``blanket_batch``, ``check`` and
``blocks``. Unknown keys are errors at every level. Every problem is reported as one line,
``<dotted.key>: <bad value> — <what is allowed>``, in a :class:`~priorflow.errors.ConfigError`.

Paths (``model_path``, ``archive``, ``output_dir``): a relative path written in the config file is
relative to the directory of that file; a relative path given with ``--set`` is relative to the
current working directory (as the shell user typed it). ``~`` is expanded; values with a URL
scheme (``s3://...``) are left alone.

Example (the original documentation's, which validates unchanged)::

    model_path: /path/to/model
    model_target: best
    diffusion:
      num_steps: 64
      sampler: {type: lms, config: {order: 3}}
    trajectory_sizes: "72"
    num_samples_per_date: 2
    start_dates: ["2000-04-03 0h", "2000-04-20 12h"]
    blanket_overlap: 4
    precision: float16
    hardware:
      backend: slurm
      account: my_account
      gpus_per_node: 4
      gen: {cpus: 8, ram: "64GB", time: "6:00:00", partition: gpu, gpus: 1}
      aggregate: {cpus: 4, ram: "32GB", time: "1:00:00", partition: cpu}

Prefect blocks (``blocks:``): a config may name saved blocks instead of paths and settings::

    blocks:
      model: reference        # a prior-model block: model_path and model_target
      archive: synthetic      # a latent-archive block: archive
      cluster: my-slurm       # a cluster-profile block: the defaults of hardware

The names are resolved by the caller's ``resolve_block(kind, name) -> mapping`` (the Prefect
code in ``blocks/``; this module imports no Prefect) into config values *before* validation. A
block fills in the keys the config leaves out; the config's own keys win (``hardware`` is merged
key by key), except that ``model_path`` with ``blocks.model`` (or ``archive`` with
``blocks.archive``) is an error. The resolved config (``config.yaml`` of a run) holds the values,
not the names.

``run_id`` may be a template with the current local time, ``nightly-{now:%Y%m%d}``: it is
filled in when the config is loaded (so each night of a schedule is a new run, and a rerun on
the same night resumes it).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from priorflow.evaluation.check import CheckConfig
from priorflow.core.dates import parse_start_date, parse_trajectory_sizes
from priorflow.errors import ConfigError

__all__ = [
    "BACKENDS",
    "AggregateResources",
    "BlockNames",
    "BlockResolver",
    "Diffusion",
    "GenResources",
    "Hardware",
    "Resources",
    "RunConfig",
    "SamplerSettings",
    "config_from_mapping",
    "load_config",
    "make_run_id",
    "parse_overrides",
    "slurm_time_seconds",
]

BACKENDS: tuple[str, ...] = ("local", "slurm", "address", "pbs", "lsf")
PATH_KEYS: tuple[str, ...] = ("model_path", "archive", "output_dir")
BLOCK_KINDS: tuple[str, ...] = ("model", "archive", "cluster")

#: ``resolve_block(kind, name) -> config values``: ``kind`` is one of :data:`BLOCK_KINDS`; the
#: mapping holds config keys (``{"model_path": ..., "model_target": ...}``, ``{"archive": ...}``,
#: ``{"hardware": {...}}``). Raises ConfigError (one line) for an unknown name.
BlockResolver = Callable[[str, str], Mapping[str, Any]]
DEFAULT_OUTPUT_DIR = "runs"

StrictInt = Annotated[int, Field(strict=True)]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RAM = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGTP]i?B?|B)\s*$", re.IGNORECASE)
_TIME_FORMATS = (
    # SLURM --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
    re.compile(r"^(?P<m>\d+)$"),
    re.compile(r"^(?P<m>\d+):(?P<s>\d{1,2})$"),
    re.compile(r"^(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2})$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2})$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2})$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})$"),
)
_TIME_HELP = 'a quoted SLURM time: "D-HH:MM:SS", "HH:MM:SS", "MM:SS" or minutes, e.g. "6:00:00"'


class _Problem(ValueError):
    """A bad value inside a validator: ``<bad value> — <what is allowed>`` (the key is added).

    ``subkey`` names a key below the validated one (for checks made on a whole section).
    """

    def __init__(self, message: str, subkey: str | None = None) -> None:
        super().__init__(message)
        self.subkey = subkey


def _show(value: Any, limit: int = 60) -> str:
    """A short, one-line rendering of a bad value."""
    if isinstance(value, str):
        text = repr(value)
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# SLURM times and memory sizes


def _sexagesimal(number: int) -> str:
    """How YAML 1.1 would have read ``number`` if it was written unquoted as ``a:b[:c]``."""
    digits = []
    while number >= 60:
        number, rest = divmod(number, 60)
        digits.append(f"{rest:02d}")
    digits.append(str(number))
    return ":".join(reversed(digits))


def slurm_time_seconds(text: str) -> int:
    """Seconds in a SLURM time string (``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``D-HH[:MM]``, minutes).

    Raises :class:`ValueError` with ``<bad value> — <what is allowed>`` when it is not one.
    """
    for pattern in _TIME_FORMATS:
        match = pattern.match(text.strip())
        if match is None:
            continue
        parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        if parts.get("s", 0) >= 60 or ("h" in parts and "m" in parts and parts["m"] >= 60):
            break
        if "d" in parts and parts["h"] >= 24:
            break
        seconds = (
            parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60
        ) + parts.get("s", 0)
        if seconds <= 0:
            raise _Problem(f"{_show(text)} — a time must be longer than zero")
        return seconds
    raise _Problem(f"{_show(text)} — not a time; use {_TIME_HELP}")


def _check_time(value: Any) -> str:
    if isinstance(value, bool):
        raise _Problem(f"{_show(value)} — {_TIME_HELP}")
    if isinstance(value, int):
        written = _sexagesimal(value)
        if ":" in written:
            hours = written if written.count(":") == 2 else written + ":00"
            raise _Problem(
                f"got the number {value}; YAML reads an unquoted {written} as minutes*60+seconds"
                f' (base 60) — quote the time: write time: "{hours}"'
            )
        raise _Problem(
            f"got the number {value} — a time must be a quoted string (YAML reads an unquoted"
            f' 6:00 as 360): write time: "{value}" for {value} minutes, or "HH:MM:SS"'
        )
    if not isinstance(value, str):
        raise _Problem(f"{_show(value)} — {_TIME_HELP}")
    slurm_time_seconds(value)
    return value.strip()


def _check_ram(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise _Problem(f'got the number {value} — give a unit, e.g. ram: "{value}GB"')
    if not isinstance(value, str) or not _RAM.match(value):
        raise _Problem(f'{_show(value)} — a memory size with a unit, e.g. "64GB", "500MB"')
    return value.strip()


# ---------------------------------------------------------------------------------------------
# The schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplerSettings(_Strict):
    """``diffusion.sampler``: which sampler and its settings (checked by the sampler itself)."""

    type: Literal["pc", "ddpm", "ddim", "rewind", "lms"] = Field(
        default="lms", description="sampler: pc, ddpm, ddim, rewind or lms (default)"
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="sampler settings, e.g. {order: 3} for lms; completed with the defaults",
    )

    @field_validator("config", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _check_sampler(self) -> SamplerSettings:
        from priorflow.core.samplers import check_sampler_config

        # raises ConfigError("diffusion.sampler.config.<key>: ...") on unknown keys / bad values
        self.config = check_sampler_config(self.type, self.config)
        return self


class Diffusion(_Strict):
    """``diffusion``: number of denoising steps and the sampler."""

    num_steps: StrictInt | None = Field(
        default=None, ge=1, description="sampler steps; null = the model card's denoising_steps"
    )
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)


class Resources(_Strict):
    """Resources of one kind of job (``hardware.gen`` or ``hardware.aggregate``)."""

    cpus: StrictInt = Field(default=1, ge=1, description="CPU cores per job")
    ram: str = Field(default="8GB", description='memory per job with a unit, e.g. "64GB"')
    time: str = Field(default="1:00:00", description='wall time, a quoted string: "6:00:00"')
    partition: str | None = Field(default=None, description="SLURM partition / PBS queue")
    gpus: StrictInt | Literal["auto"] = Field(
        default=0, description="GPUs per job, or auto = ceil(blankets / blankets_per_gpu)"
    )
    blankets_per_gpu: StrictInt | None = Field(
        default=None, ge=1, description="blankets one GPU evaluates (for gpus: auto)"
    )

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> str:
        return _check_time(value)

    @field_validator("ram", mode="before")
    @classmethod
    def _ram(cls, value: Any) -> str:
        return _check_ram(value)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> int | str:
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ):
            return value
        raise _Problem(f"{_show(value)} — a whole number >= 0, or auto")

    @model_validator(mode="after")
    def _auto_needs_blankets_per_gpu(self) -> Resources:
        if self.gpus == "auto" and self.blankets_per_gpu is None:
            raise _Problem(
                "missing — gpus: auto needs blankets_per_gpu (how many blankets one GPU"
                " evaluates), e.g. blankets_per_gpu: 16",
                subkey="blankets_per_gpu",
            )
        return self

    @property
    def time_seconds(self) -> int:
        """The wall time in seconds."""
        return slurm_time_seconds(self.time)


class GenResources(Resources):
    """``hardware.gen``: one generation job (one trajectory). Default: 1 GPU."""

    gpus: StrictInt | Literal["auto"] = Field(
        default=1, description="GPUs per job, or auto = ceil(blankets / blankets_per_gpu)"
    )


class AggregateResources(Resources):
    """``hardware.aggregate``: one aggregation job per trajectory size. Default: no GPU.

    ``where``: ``flow`` (default) aggregates in the flow's own process (cheap: it reads the
    marks and one member at a time); ``worker`` runs the aggregation tasks on a separate CPU
    worker with these resources (a batch job of its own on slurm/pbs/lsf, a local worker
    process otherwise), for runs too large for the machine the flow runs on.
    """

    where: Literal["flow", "worker"] = Field(
        default="flow", description="flow (in the flow process) or worker (a CPU worker)"
    )


class Hardware(_Strict):
    """``hardware``: where the jobs run."""

    backend: Literal["local", "slurm", "address", "pbs", "lsf"] = Field(
        default="local",
        description="local (Dask LocalCluster), slurm, address (an existing Dask scheduler);"
        " pbs and lsf are accepted for later",
    )
    account: str | None = Field(default=None, description="SLURM account to charge")
    gpus_per_node: StrictInt | None = Field(
        default=None, ge=0, description="GPUs on one node: the cap for gpus: auto"
    )
    address: str | None = Field(
        default=None, description="Dask scheduler address for backend address, tcp://host:8786"
    )
    max_workers: StrictInt | None = Field(
        default=None, ge=1, description="most workers (cluster jobs) at once; null = one per job"
    )
    interface: str | None = Field(
        default=None,
        description="network interface of the Dask scheduler and workers (ib0, lo); null ="
        " dask's choice",
    )
    scheduler_host: str | None = Field(
        default=None,
        description="address the Dask scheduler listens on, reachable from the compute nodes;"
        " null = dask's choice",
    )
    job_prologue: list[str] | None = Field(
        default=None,
        description="shell lines run in each batch job before the worker (module load ...)",
    )
    local_directory: str | None = Field(
        default=None,
        description="the workers' scratch folder (e.g. node-local $TMPDIR); null ="
        " <run_dir>/cluster/scratch",
    )
    python: str | None = Field(
        default=None, description="the Python on the compute nodes; null = this interpreter"
    )
    job_directives_skip: list[str] | None = Field(
        default=None,
        description="batch-script header lines containing any of these are dropped (--mem)",
    )
    gen: GenResources = Field(default_factory=GenResources)
    aggregate: AggregateResources = Field(default_factory=AggregateResources)

    @field_validator("job_prologue", "job_directives_skip", mode="before")
    @classmethod
    def _lines(cls, value: Any) -> Any:
        """A string is one line per line (a YAML block scalar); a list is kept."""
        if isinstance(value, str):
            return [line for line in value.splitlines() if line.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Hardware:
        if self.backend == "address" and not self.address:
            raise ConfigError(
                "hardware.address: missing — backend address needs the Dask scheduler's address,"
                " e.g. address: tcp://127.0.0.1:8786"
            )
        for kind in ("gen", "aggregate"):
            gpus = getattr(self, kind).gpus
            if (
                isinstance(gpus, int)
                and self.gpus_per_node is not None
                and gpus > self.gpus_per_node
            ):
                raise ConfigError(
                    f"hardware.{kind}.gpus: {gpus} — more than hardware.gpus_per_node"
                    f" ({self.gpus_per_node}); a job runs on one node"
                )
        return self


class BlockNames(_Strict):
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

    def named(self) -> dict[str, str]:
        """``{kind: name}`` of the blocks given."""
        return {kind: name for kind, name in self.model_dump().items() if name}


class RunConfig(_Strict):
    """A validated run config. See the module docstring for the YAML and the path rules.

    After validation ``trajectory_sizes`` is a sorted list of ints, ``start_dates`` a list of
    datetimes (in the given order), ``diffusion.sampler.config`` is completed with the sampler's
    defaults, and ``run_id`` is set (default: :func:`make_run_id`).
    """

    model_path: str = Field(
        description="model directory (card.yaml + model_best.pt/model_last.pt)"
    )
    model_target: Literal["best", "last"] = Field(default="best", description="checkpoint to load")
    diffusion: Diffusion = Field(default_factory=Diffusion)
    trajectory_sizes: list[int] = Field(
        description='states per trajectory: "72", "24,48" or the inclusive range "24-26"'
    )
    num_samples_per_date: StrictInt = Field(default=1, ge=1, description="members per start date")
    start_dates: list[datetime] = Field(description='start dates, "YYYY-MM-DD Hh"')
    blanket_overlap: StrictInt = Field(
        ge=0, description="states shared by neighbouring blankets, 0 <= overlap < blanket_size"
    )
    precision: Literal["float32", "float16", "bfloat16"] | None = Field(
        default=None, description="backbone precision; null = the model's training precision"
    )
    hardware: Hardware = Field(default_factory=Hardware)
    seed: StrictInt = Field(
        default=0, ge=0, description="run seed: every job's seed derives from it"
    )
    output_dir: str = Field(
        default=DEFAULT_OUTPUT_DIR, description="runs are written to <output_dir>/<run_id>/"
    )
    run_id: str | None = Field(
        default=None, description="name of the run; reuse one to resume it; null = timestamp+hash"
    )
    archive: str | None = Field(
        default=None, description="latent archive (zarr); null = the one named in the model card"
    )
    fold_mode: Literal["symmetrical", "causal", "average"] = Field(
        default="symmetrical", description="how blanket outputs are folded into a trajectory"
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
            raise _Problem(f'{_show(value)} — sizes in states, e.g. "72", "24,48" or "24-26"')
        return parse_trajectory_sizes(value, field="trajectory_sizes")

    @field_validator("start_dates", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> list[datetime]:
        if isinstance(value, str | date):
            value = [value]
        if not isinstance(value, list | tuple):
            raise _Problem(f'{_show(value)} — a list of dates, e.g. ["2000-04-03 0h"]')
        if not value:
            raise _Problem('empty — give at least one start date, e.g. ["2000-04-03 0h"]')
        dates: list[datetime] = []
        for i, item in enumerate(value):
            if isinstance(item, date) and not isinstance(item, datetime):
                item = datetime(item.year, item.month, item.day)
            if not isinstance(item, str | datetime):
                raise ConfigError(
                    f'start_dates[{i}]: {_show(item)} — a date such as "2000-04-03 0h"'
                )
            parsed = parse_start_date(item, field=f"start_dates[{i}]")
            if parsed in dates:
                raise ConfigError(
                    f"start_dates[{i}]: {_show(item)} — repeats start_dates[{dates.index(parsed)}];"
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
                raise _Problem(
                    f"{_show(value)} — a template may only use {{now:FORMAT}}, e.g."
                    " nightly-{now:%Y%m%d}"
                ) from None
        return value

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str | None) -> str | None:
        if value is not None and not _RUN_ID.match(value):
            raise _Problem(
                f"{_show(value)} — letters, digits, '.', '_' and '-' only (it names a directory)"
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


def format_sizes(sizes: Sequence[int]) -> str:
    """``[24, 25, 26, 48]`` -> ``"24-26,48"`` (what :func:`parse_trajectory_sizes` reads)."""
    parts: list[str] = []
    values = sorted(set(sizes))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)


def make_run_id(config: RunConfig, now: datetime | None = None) -> str:
    """A readable, sortable run id: ``20260314-153012-1a2b3c`` (local time + a hash of the config)."""
    now = now or datetime.now()
    data = config.model_dump(mode="json", exclude={"run_id"})
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:6]
    return f"{now:%Y%m%d-%H%M%S}-{digest}"


# ---------------------------------------------------------------------------------------------
# Errors: pydantic's errors -> one line


def _dotted(loc: Iterable[Any]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += ("." if key else "") + str(part)
    return key or "config"


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (``None`` when it is a free dict)."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _unknown_key(loc: Sequence[Any], via: str = "") -> str:
    key = _dotted(loc)
    model = _model_at(loc)
    if model is None:
        return f"{via}{key}: unknown key"
    allowed = list(model.model_fields)
    where = _dotted(loc[:-1]) if len(loc) > 1 else "the config"
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{via}{key}: unknown key{hint} — {where} takes {', '.join(allowed)}"


_TYPE_HELP = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "text (a string)",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "datetime_type": 'a date such as "2000-04-03 0h"',
}


def _one_line(error: dict[str, Any]) -> str:
    loc = error.get("loc", ())
    key = _dotted(loc)
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    cause = ctx.get("error")
    if isinstance(cause, ConfigError):
        return str(cause)
    if isinstance(cause, _Problem):
        if cause.subkey:
            key = _dotted((*loc, cause.subkey))
        return f"{key}: {cause}"
    if kind == "missing":
        field = _model_at(loc)
        info = field.model_fields.get(str(loc[-1])) if field and loc else None
        what = f" ({info.description})" if info is not None and info.description else ""
        return f"{key}: missing — this key is required{what}"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        holder = _model_at(loc)
        info = holder.model_fields.get(str(loc[-1])) if holder and loc else None
        if info is not None and info.default is None and info.description:
            expected += f", or null ({info.description.split('; null = ')[-1]})"
        return f"{key}: {_show(value)} — choose one of {expected}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}.get(
            kind, "<"
        )
        bound = next(iter(ctx.values()), "")
        return f"{key}: {_show(value)} — must be {sign} {bound}"
    if kind in _TYPE_HELP:
        return f"{key}: {_show(value)} — must be {_TYPE_HELP[kind]}"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{key}: {_show(value)} — {message}"


def _validate(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        errors = error.errors()
        message = _one_line(errors[0])
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise ConfigError(message) from None


# ---------------------------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping and keeps dates as text.

    Unquoted dates (``2000-04-03``) stay strings so that :func:`parse_start_date` reports a bad
    one with its key; everything else reads as with ``yaml.safe_load``.
    """


_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(f"{key}: given twice (line {mark.line + 1}) — write each key once")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config: {path} does not exist — give the path of a run config YAML")
    if not path.is_file():
        raise ConfigError(f"config: {path} is not a file — give the path of a run config YAML")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config: {path} cannot be read — {error}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except ConfigError:
        raise
    except (yaml.YAMLError, ValueError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"config: {path} is not valid YAML — {problem}{where}") from None
    if data is None:
        raise ConfigError(f"config: {path} is empty — it must be a mapping (model_path: ...)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: {path} holds a {type(data).__name__} at the top level — it must be a mapping"
            " of keys (model_path: ..., trajectory_sizes: ...)"
        )
    return data


def parse_overrides(overrides: Iterable[str]) -> list[tuple[tuple[str, ...], Any]]:
    """Parse ``key.sub=value`` items into ``(("key", "sub"), value)``; values are YAML scalars.

    ``diffusion.num_steps=32`` -> 32, ``precision=null`` -> None, ``start_dates=["2000-01-01 0h"]``
    -> a list. Note that an unquoted ``6:00:00`` is a number in YAML too: write
    ``--set 'hardware.gen.time="6:00:00"'``. Unknown keys are errors.
    """
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = tuple(key.split("."))
        if not sep or not key or not all(parts):
            raise ConfigError(
                f"--set {item!r}: not key=value — write e.g. --set diffusion.num_steps=32"
            )
        try:
            value = yaml.load(text, Loader=_UniqueKeyLoader) if text.strip() else None
        except (yaml.YAMLError, ValueError):
            raise ConfigError(
                f"--set {key}: {text!r} is not a YAML value — quote it, e.g. {key}='\"...\"'"
            ) from None
        model: type[BaseModel] | None = RunConfig
        for depth, part in enumerate(parts):
            if model is None:  # inside a free mapping (the sampler config)
                break
            field = model.model_fields.get(part)
            if field is None:
                raise ConfigError(_unknown_key(parts[: depth + 1], via="--set "))
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
            elif depth < len(parts) - 1 and part != "config":
                raise ConfigError(
                    f"--set {key}: {'.'.join(parts[: depth + 1])} is a value, not a section"
                )
            else:
                model = None
        parsed.append((parts, value))
    return parsed


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value or "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    return os.path.normpath(path)


def load_config(
    path: str | os.PathLike[str],
    overrides: Iterable[str] = (),
    resolve_block: BlockResolver | None = None,
) -> RunConfig:
    """Read a run config YAML, apply ``--set`` overrides, validate.

    Arguments:
        path: the YAML file (``yaml.safe_load`` semantics, but a key given twice is an error and
            unquoted dates stay text).
        overrides: ``"key.sub=value"`` items (:func:`parse_overrides`), applied in order.
        resolve_block: turns the ``blocks:`` names into config values (see the module
            docstring); needed only when the config names blocks.

    Relative paths in the file are resolved against the file's directory; relative paths given
    as overrides against the current working directory. An unset ``output_dir`` is ``runs`` in
    the current working directory.

    Raises:
        ConfigError: one line ``<dotted.key>: <bad value> — <what is allowed>`` (missing file,
            bad YAML, top level not a mapping, unknown key, bad value).
    """
    path = Path(path).expanduser()
    changes = parse_overrides(overrides)
    data = _read_yaml(path)
    return _build(data, changes, path.resolve().parent, resolve_block)


def config_from_mapping(
    data: dict[str, Any],
    overrides: Iterable[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
    resolve_block: BlockResolver | None = None,
) -> RunConfig:
    """Validate a config given as a mapping (a deployment's or the Prefect UI's parameters).

    The same rules as :func:`load_config`; relative paths in ``data`` are resolved against
    ``base_dir`` (default: the current working directory).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: {_show(data)} — it must be a mapping of keys (model_path: ..., ...)"
        )
    changes = parse_overrides(overrides)
    return _build(
        copy.deepcopy(data), changes, Path(base_dir or Path.cwd()).resolve(), resolve_block
    )


def _merge_defaults(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` with ``own`` on top, mapping by mapping (``own``'s values win)."""
    merged = dict(defaults)
    for key, value in own.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge_defaults(merged[key], value)
        else:
            merged[key] = value
    return merged


#: The config keys each kind of block may set (a resolver returning others is a bug).
_BLOCK_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("model_path", "model_target"),
    "archive": ("archive",),
    "cluster": ("hardware",),
}


def _apply_blocks(data: dict[str, Any], resolve_block: BlockResolver | None) -> dict[str, Any]:
    """Replace the ``blocks:`` names of ``data`` by the values of the blocks (before validation).

    The names stay in ``data["blocks"]`` (validated as :class:`BlockNames`).
    """
    names = data.get("blocks")
    if not isinstance(names, dict) or not any(names.values()):
        return data
    unknown = [kind for kind in names if kind not in BLOCK_KINDS]
    if unknown:  # let validation name it (unknown key with a suggestion)
        return data
    given = {kind: names[kind] for kind in BLOCK_KINDS if names.get(kind)}  # in this order
    for kind, name in given.items():
        if not isinstance(name, str):
            raise ConfigError(f"blocks.{kind}: {_show(name)} — the name of a saved block (text)")
    if resolve_block is None:
        shown = ", ".join(f"{kind}: {name}" for kind, name in given.items())
        raise ConfigError(
            f"blocks: the config names Prefect blocks ({shown}) — they are read from a Prefect"
            " server: set PREFECT_API_URL (or keep a server with priorflow run --keep-server),"
            " or write the paths and settings instead"
        )
    for own_key, kind in (("model_path", "model"), ("archive", "archive")):
        if kind in given and data.get(own_key):
            raise ConfigError(
                f"{own_key}: {_show(data[own_key])} — blocks.{kind} ({given[kind]}) gives it"
                f" too; keep one of {own_key} and blocks.{kind}"
            )
    for kind, name in given.items():
        values = dict(resolve_block(kind, name))
        extra = sorted(set(values) - set(_BLOCK_KEYS[kind]))
        if extra:
            raise ConfigError(
                f"blocks.{kind}: {name!r} gave {', '.join(extra)} — a {kind} block sets only"
                f" {', '.join(_BLOCK_KEYS[kind])}"
            )
        for key in ("model_path", "archive"):
            if key in values:
                values[key] = _resolve_path(values[key], Path.cwd())
        data = _merge_defaults(values, data)
    return data


def _build(
    data: dict[str, Any],
    changes: list[tuple[tuple[str, ...], Any]],
    base: Path,
    resolve_block: BlockResolver | None = None,
) -> RunConfig:
    for key in PATH_KEYS:
        if key in data:
            data[key] = _resolve_path(data[key], base)
    for parts, value in changes:
        if len(parts) == 1 and parts[0] in PATH_KEYS:
            value = _resolve_path(value, Path.cwd())
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"--set {'.'.join(parts)}: {'.'.join(parts[: depth + 1])} is"
                    f" {_show(child)} in the file, not a mapping"
                )
            node = child
        node[parts[-1]] = value
    data = _apply_blocks(data, resolve_block)
    data.setdefault("output_dir", os.path.normpath(Path.cwd() / DEFAULT_OUTPUT_DIR))
    return _validate(data)
