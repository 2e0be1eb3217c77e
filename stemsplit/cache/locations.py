"""Where stemsplit keeps weights, and whether it may use the network.

The offline policy is read from the environment here and nowhere else: ``--offline``,
``STEMSPLIT_OFFLINE``, and huggingface_hub's own ``HF_HUB_OFFLINE`` (and
``TRANSFORMERS_OFFLINE``, which huggingface_hub also honours), each set to 1/true/yes/on in
any letter case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import settings

HF_DEFAULT_ENDPOINT = "https://huggingface.co"



def expand_path(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def _xdg_cache() -> str:
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub does)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(variable)
        if value:
            return expand_path(value)
    home = os.environ.get("HF_HOME") or os.path.join(_xdg_cache(), "huggingface")
    return expand_path(home) / "hub"


def torch_hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, where ``torch.hub`` keeps the checkpoints it downloads
    (a family may keep its URL downloads there, to share them with its reference tool)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(_xdg_cache(), "torch")
    return expand_path(home) / "hub" / "checkpoints"


def stemsplit_cache_dir() -> Path:
    """``$STEMSPLIT_CACHE``, default ``$XDG_CACHE_HOME/stemsplit``: everything not on the Hub."""
    return settings.cache_dir() or expand_path(_xdg_cache()) / "stemsplit"


def url_files_dir() -> Path:
    """Where plain URL downloads (``[[models.X.files]]``) are kept."""
    return stemsplit_cache_dir() / "weights"


URL_FOLDERS = {"weights": url_files_dir, "torch_hub": torch_hub_checkpoints_dir}
"""The folders a URL download may be kept in (``ModelFile.folder``)."""


def url_folder(name: str) -> Path:
    return URL_FOLDERS[name]()


def cache_locations() -> dict[str, Path]:
    """Every folder stemsplit reads weights from or writes them to, by role."""
    return {
        "huggingface": hf_cache_dir(),
        "stemsplit": stemsplit_cache_dir(),
        "torch_hub": torch_hub_checkpoints_dir(),
    }


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class OfflinePolicy:
    """Whether the network may be used, and if not, why (for messages)."""

    reason: str = ""
    """"" when online; else what turned the network off ("--offline", "HF_HUB_OFFLINE is
    set", ...)."""

    @property
    def offline(self) -> bool:
        return bool(self.reason)

    @property
    def online_hint(self) -> str:
        """What the user can do to allow downloads."""
        for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "STEMSPLIT_OFFLINE"):
            if variable in self.reason:
                return f"unset {variable}"
        return "drop --offline"


def offline_policy(offline: bool | None = None) -> OfflinePolicy:
    """The policy for this run. ``offline`` is ``--offline`` (True), an explicit "online"
    (False: only huggingface_hub's own variables still turn the network off, since it would
    refuse anyway), or None (consult STEMSPLIT_OFFLINE too)."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if settings.is_true(variable):
            return OfflinePolicy(f"{variable} is set")
    if offline is False:
        return OfflinePolicy()
    if settings.offline():
        return OfflinePolicy("STEMSPLIT_OFFLINE is set")
    return OfflinePolicy("--offline" if offline else "")


def as_policy(offline: "bool | None | OfflinePolicy") -> OfflinePolicy:
    """Accept a policy already made, or make one from a flag."""
    return offline if isinstance(offline, OfflinePolicy) else offline_policy(offline)
