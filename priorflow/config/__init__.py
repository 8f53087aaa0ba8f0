"""The run config: a YAML file (plus ``--set key=value`` overrides) validated into :class:`RunConfig`.

The keys are those of the original generation script's config (same meaning), plus ``seed``,
``output_dir``, ``run_id``, ``archive``, ``fold_mode``, ``blanket_batch``, ``check`` and
``blocks``. Unknown keys are errors at every level. Every problem is reported as one line,
``<dotted.key>: <bad value> — <what is allowed>``, in a :class:`~priorflow.errors.ConfigError`.

Paths (``model_path``, ``archive``, ``output_dir``): a relative path written in the config file is
relative to the directory of that file, and so is the default ``output_dir``, ``runs``; a
relative path given with ``--set`` is relative to the current working directory (as the shell
user typed it). ``~`` is expanded; values with a URL scheme (``s3://...``) are left alone.
``output_dir: "{model_path}/prior"`` puts the runs under the model directory (Appa's
``<lap>/prior/<id>``); ``{model_path}`` is the one placeholder, and only at the start.

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

from priorflow.config.check import CheckConfig
from priorflow.config.hardware import (
    BACKENDS,
    BATCH_BACKENDS,
    AggregateResources,
    Backend,
    GenResources,
    Hardware,
    Resources,
    ignored_keys,
)
from priorflow.config.loading import (
    BlockResolver,
    config_from_mapping,
    load_config,
    parse_overrides,
)
from priorflow.config.schema import (
    BlockNames,
    Diffusion,
    RunConfig,
    SamplerSettings,
    make_run_id,
)
from priorflow.config.values import format_sizes, slurm_time_seconds

__all__ = [
    "BACKENDS",
    "BATCH_BACKENDS",
    "AggregateResources",
    "Backend",
    "BlockNames",
    "BlockResolver",
    "CheckConfig",
    "Diffusion",
    "GenResources",
    "Hardware",
    "Resources",
    "RunConfig",
    "SamplerSettings",
    "config_from_mapping",
    "format_sizes",
    "ignored_keys",
    "load_config",
    "make_run_id",
    "parse_overrides",
    "slurm_time_seconds",
]
