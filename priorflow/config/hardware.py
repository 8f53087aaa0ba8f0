"""``hardware``: where a run's jobs run, and the resources of one job of each kind."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from priorflow.config.messages import Problem, Strict, show
from priorflow.config.values import check_ram, check_time, slurm_time_seconds
from priorflow.errors import ConfigError

Backend = Literal["local", "slurm", "address", "pbs", "lsf"]
BACKENDS: tuple[str, ...] = get_args(Backend)
#: Backends whose workers are batch jobs (dask-jobqueue).
BATCH_BACKENDS: tuple[str, ...] = ("slurm", "pbs", "lsf")
StrictInt = Annotated[int, Field(strict=True)]

_BATCH_ONLY = ("interface", "scheduler_host", "job_prologue", "python", "job_directives_skip")
#: The ``hardware`` keys each backend does not use (``priorflow plan`` names those a config
#: sets). ``local`` has no scheduler and no walltime; ``address`` runs on workers someone else
#: started, so it asks for nothing but their ``GPU`` slots.
IGNORED_KEYS: dict[str, tuple[str, ...]] = {
    "local": (
        "account",
        "address",
        *_BATCH_ONLY,
        "local_directory",
        "gen.partition",
        "gen.time",
        "aggregate.partition",
        "aggregate.time",
        "aggregate.ram",
    ),
    "address": (
        "account",
        "max_workers",
        *_BATCH_ONLY,
        "local_directory",
        "dashboard_address",
        *(
            f"{kind}.{key}"
            for kind in ("gen", "aggregate")
            for key in ("cpus", "ram", "time", "partition")
        ),
    ),
    "slurm": ("address",),
    "pbs": ("address",),
    "lsf": ("address",),
}
#: ``hardware.aggregate`` keys that only an aggregation worker uses (``where: worker``).
AGGREGATE_WORKER_KEYS: tuple[str, ...] = ("cpus", "ram", "time", "partition", "gpus")


class Resources(Strict):
    """Resources of one kind of job (``hardware.gen`` or ``hardware.aggregate``)."""

    cpus: StrictInt = Field(
        default=1,
        ge=1,
        description="CPU cores per job: the batch job's cores, and its torch threads (local:"
        " threads per worker; the workers are cores // cpus)",
    )
    ram: str = Field(
        default="8GB",
        description='memory per job with a unit, e.g. "64GB" (local: at most memory // ram'
        " workers)",
    )
    time: str = Field(
        default="1:00:00",
        description='wall time, a quoted string as SLURM reads it: "6:00:00" = 6 h, "6:00" ='
        " 6 min (batch backends only)",
    )
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
        return check_time(value)

    @field_validator("ram", mode="before")
    @classmethod
    def _ram(cls, value: Any) -> str:
        return check_ram(value)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> int | str:
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ):
            return value
        raise Problem(f"{show(value)} — a whole number >= 0, or auto")

    @model_validator(mode="after")
    def _auto_needs_blankets_per_gpu(self) -> Resources:
        if self.gpus == "auto" and self.blankets_per_gpu is None:
            raise Problem(
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


class Hardware(Strict):
    """``hardware``: where the jobs run."""

    backend: Backend = Field(
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
    dashboard_address: str = Field(
        default="127.0.0.1:0",
        description="where the Dask dashboard listens: 127.0.0.1:0 = loopback, a free port"
        " (default); :8787 = every interface, port 8787",
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


def _set_keys(hardware: Hardware) -> list[str]:
    """The dotted keys (``gen.time``) the config (or a cluster block) gave, not defaults."""
    keys = [key for key in hardware.model_fields_set if key not in ("gen", "aggregate")]
    for kind in ("gen", "aggregate"):
        if kind in hardware.model_fields_set:
            keys += [f"{kind}.{key}" for key in getattr(hardware, kind).model_fields_set]
    return keys


def ignored_keys(hardware: Hardware) -> dict[str, list[str]]:
    """The keys this config sets that its backend does not use, by reason.

    ``{"backend local": ["hardware.gen.time", ...], "aggregate.where flow": [...]}``; the keys
    in the order of :data:`IGNORED_KEYS`, then of the fields; empty reasons left out.
    """
    given = _set_keys(hardware)
    by_backend = [key for key in IGNORED_KEYS[hardware.backend] if key in given]
    out: dict[str, list[str]] = {}
    if by_backend:
        out[f"backend {hardware.backend}"] = [f"hardware.{key}" for key in by_backend]
    if hardware.aggregate.where == "flow":
        flow = [
            f"hardware.aggregate.{key}"
            for key in AGGREGATE_WORKER_KEYS
            if f"aggregate.{key}" in given and f"aggregate.{key}" not in by_backend
        ]
        if flow:
            out["aggregate.where flow"] = flow
    return out
