"""The umx family: sigsep's Open-Unmix models (umxhq, umxl, umx, umxse).

The adapter (``adapter.FAMILY``) is what the families table in ``stemsplit.families``
loads; the other modules of this folder are this family's alone.
"""

from .adapter import FAMILY

__all__ = ["FAMILY"]
