"""Prefect blocks of priorflow: ``PriorModel``, ``LatentArchive``, ``ClusterProfile``.

Register their types on a server with ``prefect block register -m blocks``; then create and
edit them in the UI (Blocks) or in Python, and name them in a run config (``blocks:``).
"""

from blocks.models import BLOCK_CLASSES, ClusterProfile, LatentArchive, PriorModel
from blocks.resolve import load_block, resolve_block

__all__ = [
    "BLOCK_CLASSES",
    "ClusterProfile",
    "LatentArchive",
    "PriorModel",
    "load_block",
    "resolve_block",
]
