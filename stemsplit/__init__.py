"""stemsplit: split songs into stems with published pretrained separation models.

The Python API (torch is imported on first use, not on ``import stemsplit``)::

    import stemsplit

    stems = stemsplit.separate("song.mp3")                 # {"drums": array, ...}
    stems = stemsplit.separate("song.mp3", model="four_stems_best")   # a preset
    stems = stemsplit.separate(array, sample_rate=44100, model=["MODEL_A", "MODEL_B"])

    with stemsplit.Separator(model="MODEL", device="cuda") as separator:
        for path in paths:                                 # the models load once
            separator.separate_to_files(path, out_dir="out", format="flac")

``stemsplit models`` lists the models and presets; ``load_model`` loads one model and returns
its networks, ``load`` a model or ensemble as the pipeline runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "Separator", "separate", "load_model", "load"]

if TYPE_CHECKING:  # pragma: no cover
    from .loading import load, load_model
    from .separator import Separator, separate


def __getattr__(name: str) -> Any:
    """``Separator``, ``separate``, ``load_model`` and ``load``, imported when first used."""
    if name in ("Separator", "separate"):
        from . import separator

        return getattr(separator, name)
    if name in ("load_model", "load"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'stemsplit' has no attribute {name!r}")
