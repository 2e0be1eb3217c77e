"""The MDX-Net family: the UVR community's MDX-Net ONNX models.

The adapter (``adapter.FAMILY``) is what the families table in ``stemsplit.families``
loads; the other modules of this folder are this family's alone.
"""

from .adapter import FAMILY

__all__ = ["FAMILY"]
