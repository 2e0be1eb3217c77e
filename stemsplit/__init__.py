"""stemsplit: split songs into stems with published pretrained separation models.

The Python API (torch is imported on first use, not on ``import stemsplit``)::

    import stemsplit
    stems = stemsplit.separate("song.mp3")                 # {"drums": array, ...}
    model = stemsplit.load_model(name)                     # `stemsplit models` lists them
    paths = stemsplit.separate("song.mp3", model=model, out_dir="out", format="flac")
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "separate", "load_model"]


def separate(*args, **kwargs):
    """See ``stemsplit.pipeline.separate``."""
    from .pipeline import separate as _separate

    return _separate(*args, **kwargs)


def load_model(*args, **kwargs):
    """See ``stemsplit.loading.load_model``."""
    from .loading import load_model as _load_model

    return _load_model(*args, **kwargs)
