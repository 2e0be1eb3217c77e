"""The frequency bands of BandIt's band-split networks (``bandit.py``, ``bandit_v2.py``).

Both BandIt versions cut a one-sided spectrum of ``n_freqs = n_fft // 2 + 1`` bins into bands
given as half-open bin ranges ``[start, end)``. The "musical" layout (the only one ZFTurbo's
published configs use; BandIt v2 knows no other) is ``n_bands`` overlapping bands evenly
spaced in MIDI pitch:

* the lowest centre is the first bin's frequency ``df = fs / nfft`` (``nfft = 2 (n_freqs - 1)``)
  in MIDI pitch, clipped below at note 0; the highest is ``fs / 2``; centres ``linspace``
  between them;
* every band spans its centre divided and multiplied by ``2 ** (octaves / n_bands)``, where
  ``octaves = log2((fs / 2) / df)``: bins ``floor(low / df)`` to ``ceil(high / df)``, both
  included (clipped to the spectrum);
* the first band also takes every bin below it, the last every bin above it;
* each bin's weight in a band is 1 / (the number of bands holding it): the masks of
  overlapping bands are summed with these weights.

Pitch conversions follow librosa's formulas (``12 (log2 f - log2 440) + 69`` and back) with
numpy's float64 steps, so the bin edges round as BandIt's own code rounds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BandLayout", "check_bands", "musical_bands"]


@dataclass(frozen=True, eq=False)
class BandLayout:
    """Bands as bin ranges, and each band's per-bin weights (float64; None: no weights)."""

    bands: tuple[tuple[int, int], ...]
    weights: tuple[np.ndarray, ...] | None

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(end - start for start, end in self.bands)


def _hz_to_midi(hz):
    return 12 * (np.log2(np.asanyarray(hz)) - np.log2(440.0)) + 69


def _midi_to_hz(notes):
    return 440.0 * (2.0 ** ((np.asanyarray(notes) - 69.0) / 12.0))


def musical_filterbank(n_bands: int, sample_rate: float, n_freqs: int) -> np.ndarray:
    """Which bins each musical band holds: (n_bands, n_freqs) float64 of 0 and 1."""
    nfft = 2 * (n_freqs - 1)
    bin_hz = sample_rate / nfft
    top_hz = sample_rate / 2
    octaves = np.log2(top_hz / bin_hz)
    spread = np.power(2.0, octaves / n_bands)

    lowest = max(0, _hz_to_midi(bin_hz))
    centres = _midi_to_hz(np.linspace(lowest, _hz_to_midi(top_hz), n_bands))
    first_bins = np.floor(centres / spread / bin_hz).astype(int)
    last_bins = np.ceil(centres * spread / bin_hz).astype(int)

    bank = np.zeros((n_bands, n_freqs))
    for band in range(n_bands):
        bank[band, first_bins[band]:last_bins[band] + 1] = 1.0
    bank[0, :first_bins[0]] = 1.0
    bank[-1, last_bins[-1] + 1:] = 1.0
    return bank


def _layout_of(bank: np.ndarray) -> BandLayout:
    """Each band from its first to its last held bin (bands holding none are dropped), and
    its bins' share of the bank's total weight."""
    totals = bank.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = bank / totals
    bands, weights = [], []
    for row, share in zip(bank, shares):
        held = np.flatnonzero(row)
        if held.size == 0:
            continue
        start, end = int(held[0]), int(held[-1]) + 1
        bands.append((start, end))
        weights.append(share[start:end].copy())
    return BandLayout(bands=tuple(bands), weights=tuple(weights))


def musical_bands(n_fft: int, sample_rate: float, n_bands: int) -> BandLayout:
    """BandIt's "musical" layout of ``n_bands`` bands over ``n_fft // 2 + 1`` bins."""
    if isinstance(n_bands, bool) or not isinstance(n_bands, int) or n_bands < 1:
        raise ValueError(f"n_bands must be a positive whole number, not {n_bands!r}")
    if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < 2:
        raise ValueError(f"n_fft must be a whole number >= 2, not {n_fft!r}")
    if not isinstance(sample_rate, (int, float)) or isinstance(sample_rate, bool) \
            or sample_rate <= 0:
        raise ValueError(f"fs must be a positive number, not {sample_rate!r}")
    return _layout_of(musical_filterbank(n_bands, sample_rate, n_fft // 2 + 1))


def check_bands(bands: tuple[tuple[int, int], ...]) -> None:
    """The checks BandIt's mask estimators make of a layout, whatever ``require_no_gap``
    says (ValueError): no empty band, the first band starts at bin 0, and no band starts
    more than one bin past the previous band's (exclusive) end: BandIt's own rule lets a
    one-bin gap through. Its "no overlap" check never fires (it never moves past the first
    band), so ``require_no_overlap`` is not checked either."""
    if not bands:
        raise ValueError("no bands")
    for start, end in bands:
        if end - start <= 0:
            raise ValueError("a band is empty")
    if bands[0][0] != 0:
        raise ValueError("the first band does not start at bin 0")
    previous_end = -1
    for start, end in bands:
        if start - previous_end > 1:
            raise ValueError("the bands leave a gap")
        previous_end = end
