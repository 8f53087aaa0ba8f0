"""Running a plan: preparing it, executing one job, and describing the workers it needs.

- :mod:`~priorflow.run.prepare`: config -> checked :class:`PreparedRun` (card, checkpoint,
  archive, plan);
- :mod:`~priorflow.run.execute`: :func:`run_job`, one job on a worker;
- :mod:`~priorflow.run.environment`: torch threads, GPUs and batch job of the process;
- :mod:`~priorflow.run.local`, :mod:`~priorflow.run.cluster`: the local worker layout and the
  batch-scheduler cluster spec (no Dask distributed, no dask-jobqueue here).
"""
