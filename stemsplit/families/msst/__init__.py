"""The msst family: checkpoints of ZFTurbo's Music-Source-Separation-Training.

The adapter (``adapter.FAMILY``) is what the families table in ``stemsplit.families``
loads; the other modules of this folder are this family's alone.
"""

from .adapter import FAMILY

__all__ = ["FAMILY"]
