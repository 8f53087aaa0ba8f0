"""Prefect blocks of priorflow: ``PriorModel``, ``LatentArchive``, ``ClusterProfile``.

Register their types on a server with ``prefect block register -m blocks``; then create and
edit them in the UI (Blocks) or in Python, and name them in a run config (``blocks:``);
:mod:`flows.run_config` reads them when it loads the config.
"""

from blocks.models import BLOCK_CLASSES, ClusterProfile, LatentArchive, PriorModel

__all__ = ["BLOCK_CLASSES", "ClusterProfile", "LatentArchive", "PriorModel"]
