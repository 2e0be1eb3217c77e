"""Speech metrics of one stem: PESQ and STOI (``stemsplit eval --metrics pesq,stoi,estoi``).

Both are defined on mono speech at a speech rate, so a stem is first made into that:

* **Downmix**: the mean of its channels (in float64), for reference and estimate alike.
* **Resampling** to :data:`SAMPLE_RATE` (16 kHz): :func:`stemsplit.audio.convert`, ffmpeg's
  resampler (libswresample), the one that turns every file and array of stemsplit into the
  model's rate; its result has exactly ``round(frames * 16000 / rate)`` frames.
* **PESQ** (ITU-T P.862.2, *wideband* mode, at 16 kHz) through the ``pesq`` package, a
  wrapper of the ITU's reference C code. It predicts the mean opinion score listeners
  would give the estimate's quality (MOS-LQO): 1.0 (bad) to 4.64 (the wideband maximum,
  the score of a reference against itself). The wrapper scales both signals by their common
  peak first, and P.862 aligns levels and delays itself: a louder or later estimate is not
  penalised. P.862 is specified for 8-30 s recordings; longer stems are accepted as given.
* **STOI** (Taal et al., 2011) and **ESTOI** (its extended form, Jensen and Taal, 2016, for
  modulated maskers) through ``pystoi``, from the same 16 kHz arrays (pystoi resamples to
  its own 10 kHz inside). They predict the intelligibility of the estimate, 0 to 1
  (1: as intelligible as the reference); frames where the reference is more than 40 dB
  below its loudest are left out.

These are speech measures: they are given for the stems of :data:`SPEECH_STEMS` only
(:func:`is_speech_stem`); a drum or bass stem gets none. What a metric cannot score (a
silent reference, a clip too short, no speech found) is returned as a reason, never raised.
Nothing here prints; the packages are imported on first use (the ``eval`` extra).
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from . import audio

__all__ = ["METRICS", "MODULES", "SAMPLE_RATE", "SPEECH_STEMS", "downmix", "is_speech_stem",
           "prepare", "score_stem"]

SAMPLE_RATE = 16000
"""Where PESQ (wideband) and STOI are computed."""

SPEECH_STEMS = ("vocals", "speech", "voice", "dialog", "dialogue", "lead_vocals",
                "backing_vocals", "back_vocals")
"""The stems scored with the speech metrics (names as :mod:`stemsplit.stems` spells them)."""

MODULES = {"pesq": "pesq", "stoi": "pystoi", "estoi": "pystoi"}
"""The package each metric imports."""

PESQ_SHORTEST_SECONDS = 0.25
"""P.862's shortest input (the ``pesq`` package refuses shorter ones)."""


def is_speech_stem(stem: str) -> bool:
    return stem in SPEECH_STEMS


def downmix(samples: np.ndarray) -> np.ndarray:
    """A (channels, frames) array (or a mono one) as the float64 mean of its channels."""
    samples = np.asarray(samples, dtype=np.float64)
    return samples if samples.ndim == 1 else samples.mean(axis=0)


def prepare(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """What the speech metrics are computed from: the mono downmix at 16 kHz, float64."""
    mono = downmix(samples).astype(np.float32)
    return audio.convert(mono, int(sample_rate), SAMPLE_RATE, 1)[0].astype(np.float64)


def _pesq(reference: np.ndarray, estimate: np.ndarray) -> tuple[float | None, str | None]:
    import pesq

    if reference.shape[-1] < PESQ_SHORTEST_SECONDS * SAMPLE_RATE:
        return None, (f"PESQ needs {PESQ_SHORTEST_SECONDS} s at least; "
                      f"{reference.shape[-1] / SAMPLE_RATE:.2f} s here")
    try:
        return float(pesq.pesq(SAMPLE_RATE, reference, estimate, "wb")), None
    except pesq.PesqError as error:  # its C code's refusals, each with a message in bytes
        reason = error.args[0] if error.args else type(error).__name__
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        if "utterances" in reason.lower():  # b"No utterances detected": none in the reference
            return None, "PESQ found no speech in the reference"
        return None, f"PESQ: {reason}"


def _stoi(reference: np.ndarray, estimate: np.ndarray, extended: bool
          ) -> tuple[float | None, str | None]:
    from pystoi import stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(reference, estimate, SAMPLE_RATE, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        # pystoi's 1e-5 is no score: fewer than 30 frames (0.4 s) of non-silent reference
        return None, "STOI needs 0.4 s of reference above its silence threshold"
    return value, None


SCORERS: Mapping[str, Callable[[np.ndarray, np.ndarray], tuple[float | None, str | None]]] = {
    "pesq": _pesq,
    "stoi": lambda reference, estimate: _stoi(reference, estimate, extended=False),
    "estoi": lambda reference, estimate: _stoi(reference, estimate, extended=True),
}
METRICS = tuple(SCORERS)


def score_stem(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
               metrics: Sequence[str]) -> tuple[dict[str, float | None], list[str]]:
    """``metrics`` (names of :data:`METRICS`) of one stem's (channels, frames) reference and
    estimate at ``sample_rate``, cut to one length: ({metric: value or None}, reasons), one
    reason per cause, naming the metrics it left without a value."""
    values: dict[str, float | None] = {metric: None for metric in metrics}
    if not np.any(reference):
        return values, [f"no {', '.join(metrics)} (the reference is silent)"]
    clean, degraded = prepare(reference, sample_rate), prepare(estimate, sample_rate)
    reasons: dict[str, list[str]] = {}
    for metric in metrics:
        values[metric], reason = SCORERS[metric](clean, degraded)
        if reason is not None:
            reasons.setdefault(reason, []).append(metric)
    return values, [f"no {', '.join(names)} ({reason})" for reason, names in reasons.items()]
