"""Open-Unmix weights: one state dict per target, built into ``models.openunmix``'s networks.

A published ``.pth`` is a bare state dict in torch's legacy (non-zip) format, read by
``torch_archive`` without executing pickled code. The network's shape comes from the state
itself (``state_dimensions``): bins, channels, hidden size, LSTM layers and direction, and
the bins it reads (``input_mean``'s length). Keys a network does not have (v1.0's
``sample_rate``, ``stft.window``, ``transform.0.window``) are ignored, as openunmix's
``load_state_dict(strict=False)`` ignores them; a missing network key is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...errors import ModelError, UsageError
from .config import UmxConfig

RESIDUAL_STEM = "residual"
"""The extra stem of ``--residual`` (openunmix's name for it)."""
DEFAULT_NITER = 1
DEFAULT_WIENER_FRAMES = 300


def read_state(path: Path) -> dict:
    """One target's state dict from its ``.pth``."""
    from ..torch_archive import load_torch_archive

    state = load_torch_archive(path, hint="an Open-Unmix .pth holds only a state dict")
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ModelError(f"{path}: not an Open-Unmix state dict")
    return dict(state)


def build_network(state: dict, config: UmxConfig, label: str) -> Any:
    """An ``UnmixNet`` with ``state``'s weights, in eval mode."""
    import torch

    from ...models.openunmix import NETWORK_KEYS, UnmixNet, state_dimensions

    missing = [key for key in NETWORK_KEYS if key not in state]
    if missing or "lstm.weight_ih_l0" not in state:
        raise ModelError(f"{label}: not an Open-Unmix network (no {(missing or ['lstm'])[0]})")
    if not all(isinstance(state[key], torch.Tensor) for key in NETWORK_KEYS):
        raise ModelError(f"{label}: not an Open-Unmix network (a weight is not a tensor)")
    dimensions = state_dimensions(state)
    if dimensions.pop("input_channels") != dimensions["channels"]:
        raise ModelError(f"{label}: fc1 and fc3 disagree on the channel count")
    if dimensions["bins"] != config.n_fft // 2 + 1:
        raise ModelError(f"{label}: a network of {dimensions['bins']} bins does not fit an "
                         f"STFT of {config.n_fft} (n_fft // 2 + 1 = {config.n_fft // 2 + 1})")
    with torch.device("meta"):  # no default initialisation: every weight comes from state
        network = UnmixNet(**dimensions)
    own = network.state_dict()
    try:
        network.load_state_dict({key: _like(state[key], own[key]) for key in own
                                 if key in state}, strict=True, assign=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ModelError(f"{label}: its weights do not fit an Open-Unmix network ({first})") \
            from None
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def _like(value: Any, own: Any) -> Any:
    """A stored tensor in the dtype of the network's own (meta) tensor, contiguous."""
    return value.to(own.dtype).contiguous() if hasattr(value, "to") else value


def build_separator(states: Mapping[str, dict], config: UmxConfig,
                    options: Mapping[str, Any], label: str) -> Any:
    """The separator of ``states`` (stem -> state dict, in output order) with the family
    options: ``niter``, ``residual``, ``softmask``, ``wiener_win_len`` (0: the whole
    track)."""
    from ...models.openunmix import UnmixSeparator

    networks = [build_network(state, config, f"{label} ({stem})")
                for stem, state in states.items()]
    if len({network.channels for network in networks}) != 1:
        raise ModelError(f"{label}: its targets' networks differ in channel count")
    niter = options.get("niter")
    niter = DEFAULT_NITER if niter is None else niter
    window = options.get("wiener_win_len")
    window = DEFAULT_WIENER_FRAMES if window is None else window
    if niter < 0:
        raise UsageError(f"--niter must be 0 or more, not {niter}")
    if window < 0:
        raise UsageError(f"--wiener-win-len must be 0 (the whole track) or more, not {window}")
    residual = bool(options.get("residual"))
    if niter > 0 and len(networks) + residual < 2:
        raise UsageError(f"{label} has one target: the Wiener filter's EM steps need two",
                         hint="add --residual, or --niter 0")
    separator = UnmixSeparator(networks, config.n_fft, config.hop, niter=niter,
                               softmask=bool(options.get("softmask")), residual=residual,
                               wiener_frames=window or None)
    return separator.eval()
