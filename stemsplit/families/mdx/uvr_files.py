"""What the families of UVR's downloads (MDX-Net's .onnx, VR's .pth) share as registry
entries: their weights.toml parameters shown as they are, and a download checked against
UVR's hash of the file. Standard library only (the registry and ``--help`` import it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import Fetched, parameter_lines

if TYPE_CHECKING:  # pragma: no cover
    from ...specs import ModelSpec


class UVRFileEntries:
    """Mixin for a ``Family`` whose ``spec.config`` has ``as_dict()`` and a UVR hash
    (``uvr_hash``, or ``uvr_hash_candidates``)."""

    def details(self, spec: "ModelSpec") -> dict:
        return {"parameters": spec.config.as_dict()}

    def detail_lines(self, spec: "ModelSpec") -> list[tuple[str, str]]:
        return parameter_lines(spec.config.as_dict())

    def fetch(self, spec, *, offline, progress=None, options=None) -> Fetched:
        from .onnx_runner import check_uvr_hash  # UVR's hash: one definition, one check

        fetched = super().fetch(spec, offline=offline, progress=progress,  # type: ignore[misc]
                                options=options)
        check_uvr_hash(fetched.paths[0], spec)
        return fetched
