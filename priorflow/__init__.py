"""priorflow: prior trajectories from latent diffusion models of the atmosphere.

The package is the numerical core: schedules, the preconditioned denoiser, blanket
composition, samplers, dates and seeds, models, the synthetic world, archives and stores.
It imports no Prefect; the orchestration lives in the top-level ``flows``, ``tasks`` and
``blocks`` packages.
"""

__version__ = "0.1.0"
