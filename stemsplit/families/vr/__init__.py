"""The VR family: UVR's VR Architecture models.

The adapter (``adapter.FAMILY``) is what the families table in ``stemsplit.families``
loads; the other modules of this folder are this family's alone.
"""

from .adapter import FAMILY

__all__ = ["FAMILY"]
