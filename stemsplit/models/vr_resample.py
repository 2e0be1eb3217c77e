"""The resamplers UVR's VR band configurations name, as librosa 0.10-0.11 runs them.

Each band config names its input resampler (``res_type``): "polyphase" (scipy's
``resample_poly`` with up/down the rates over their gcd), "kaiser_fast"/"kaiser_best"
(resampy), "sinc_best"/"sinc_medium"/"sinc_fastest" (libsamplerate through ``samplerate``),
"soxr_*" (soxr) or "fft"/"scipy" (one FFT of the whole signal). The output is cut or
zero-padded to ceil(n * new / old) samples and keeps the input's dtype. These are other
people's algorithms with their own filter tables: matching them means calling them, so
the libraries are this family's optional dependencies (``pip install stemsplit-cli[vr]``).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError

INSTALL_HINT = "pip install 'stemsplit-cli[vr]' (scipy, resampy, samplerate, soxr)"


def _module(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise UsageError(f"the VR models need the {name.split('.')[0]} package for their "
                         "resampling", hint=INSTALL_HINT) from None


_MODULES = {"polyphase": "scipy.signal", "fft": "scipy.signal", "scipy": "scipy.signal",
            "kaiser_fast": "resampy", "kaiser_best": "resampy"}


def require(methods) -> None:
    """Import the package each of ``methods`` needs now (a UsageError naming the missing
    one and the ``vr`` extra), so that a missing resampler stops a run before any work."""
    for method in methods:
        if method.startswith("soxr"):
            _module("soxr")
        elif method in _MODULES:
            _module(_MODULES[method])
        else:
            _module("samplerate")


def resample(signal: np.ndarray, old: int, new: int, method: str) -> np.ndarray:
    """``signal`` (channels, time) from ``old`` Hz to ``new`` Hz with ``method``."""
    if old == new:
        return signal
    length = int(math.ceil(signal.shape[-1] * new / old))
    if method == "polyphase":
        divisor = math.gcd(old, new)
        out = _module("scipy.signal").resample_poly(signal, new // divisor, old // divisor,
                                                    axis=-1)
    elif method in ("kaiser_fast", "kaiser_best"):
        out = _module("resampy").resample(signal, old, new, filter=method, axis=-1)
    elif method in ("sinc_best", "sinc_medium", "sinc_fastest", "linear", "zero_order_hold"):
        converter = _module("samplerate")
        out = np.stack([converter.resample(row, new / old, converter_type=method)
                        for row in signal])
    elif method.startswith("soxr"):
        soxr = _module("soxr")
        out = np.stack([soxr.resample(row, old, new, quality=method) for row in signal])
    elif method in ("fft", "scipy"):
        out = _module("scipy.signal").resample(signal, length, axis=-1)
    else:
        raise UsageError(f"unknown resampler {method!r} in a VR band config")
    if out.shape[-1] > length:
        out = out[..., :length]
    elif out.shape[-1] < length:
        out = np.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, length - out.shape[-1])])
    return np.asarray(out, dtype=signal.dtype)
