"""Our own implementations of the published separation networks.

``build_network`` turns a checkpoint's class name, constructor arguments and state into a
ready, evaluating ``torch.nn.Module``. Model code never touches files, network or terminal.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping

from ..errors import ModelError

# The class names stored in the published checkpoints -> (our module, our class).
NETWORK_CLASSES: dict[str, tuple[str, str]] = {
    "demucs.htdemucs.HTDemucs": ("htdemucs", "HTDemucs"),
    "demucs.hdemucs.HDemucs": ("hdemucs", "HDemucs"),
    "demucs.demucs.Demucs": ("demucs", "Demucs"),
}


def network_class(klass: str) -> type:
    """Our class for a checkpoint's dotted class name."""
    try:
        module_name, class_name = NETWORK_CLASSES[klass]
    except KeyError:
        known = ", ".join(sorted(NETWORK_CLASSES))
        raise ModelError(f"unsupported network class '{klass}'", hint=f"supported: {known}")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def build_network(klass: str, args: list, kwargs: Mapping[str, Any], state: Mapping[str, Any]):
    """Instantiate our network for ``klass`` and load ``state`` (cast to float32).

    Like demucs, constructor keywords the class does not know are dropped (old checkpoints
    carry a few training-only ones); the state must then match exactly.
    """
    import torch

    cls = network_class(klass)
    parameters = inspect.signature(cls).parameters
    kept = {key: value for key, value in kwargs.items() if key in parameters}
    try:
        network = cls(*args, **kept)
    except (TypeError, ValueError) as error:
        raise ModelError(f"cannot build {klass} from its checkpoint arguments: {error}")
    float_state = {
        key: value.float() if torch.is_tensor(value) and value.is_floating_point() else value
        for key, value in state.items()
    }
    try:
        network.load_state_dict(float_state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelError(f"checkpoint does not match {klass}: {first_line}")
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network
