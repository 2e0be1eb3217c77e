"""The demucs family: bags of Demucs (v2), HDemucs (v3) and HTDemucs (v4) networks.

The adapter (``adapter.FAMILY``) is what the families table in ``stemsplit.families``
loads; the other modules of this folder are this family's alone.
"""

from .adapter import FAMILY

__all__ = ["FAMILY"]
