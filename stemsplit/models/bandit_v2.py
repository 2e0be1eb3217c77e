"""BandIt v2 (Watcharasupat and Lerch, the "Banquet"-era multilingual cinematic separator),
as ZFTurbo's Music-Source-Separation-Training runs it (``model_type: bandit_v2``:
``models/bandit_v2/bandit.py``, ``Bandit(**config.kwargs)``). Its state dict has exactly the
keys and shapes of ZFTurbo's class, so a bare state dict saved from it loads with
``strict=True``.

The network is BandIt Plus's (``bandit.py`` holds the shared parts and the maths), with
these differences:

* its STFT is built from the config (``n_fft``, ``win_length``, ``hop_length``,
  ``window_fn``, ``wkwargs``, ``center``, ``normalized``, ``pad_mode``, ``onesided``);
* a band's features are the real and imaginary part of each bin in turn (v1: all real
  parts, then all imaginary parts);
* the bands are always "musical" (``band_type``), computed for ``fs`` (44100 unless the
  config says: ZFTurbo's published 48 kHz config leaves it out; it makes no difference
  there, as the layout depends on ``fs`` only where a bin is narrower than 8.18 Hz);
* the frequency weights are buffers only when ``use_freq_weights`` is True;
* state-dict names: a band encoder's LayerNorm and Linear are ``combined.0`` and
  ``combined.1``; the residual RNNs are ``seqband.0``, ``seqband.2``, ... (each is followed
  by a parameterless transpose in ZFTurbo's sequence); each mask head's three parts are also
  in the state dict a second time, as ``combined.0``, ``combined.1``, ``combined.2``;
* ``stft_precisions``, ``bandsplit_precisions``, ``tf_model_precisions`` and
  ``mask_estim_precisions`` are accepted and change nothing (as in ZFTurbo's code).

Model code never touches files, network or terminal.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .bandit import (
    MaskEstimator,
    MaskHead,
    _flag,
    _stems,
    _whole,
    band_features,
    embed_bands,
    residual_rnns,
    run_sequence_model,
    spectral_pair,
)
from .bandsplit_bands import check_bands, musical_bands

__all__ = ["BandItV2"]


class _BandEncoder(nn.Module):
    """v2's band encoder: ``combined`` = (LayerNorm, Linear)."""

    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.combined = nn.Sequential(nn.LayerNorm(2 * width), nn.Linear(2 * width, emb_dim))

    def forward(self, features: Tensor) -> Tensor:
        return self.combined(features)


class _MaskHead(MaskHead):
    """v2's mask head: the same parts, also held as ``combined``."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.combined = nn.Sequential(self.norm, self.hidden, self.output)


class _BandSplit(nn.Module):
    def __init__(self, layout, emb_dim: int) -> None:
        super().__init__()
        self.layout = layout
        self.emb_dim = emb_dim
        self.norm_fc_modules = nn.ModuleList(_BandEncoder(w, emb_dim) for w in layout.widths)

    def forward(self, spec: Tensor) -> Tensor:
        return embed_bands(band_features(spec, self.layout, interleaved=True),
                           self.norm_fc_modules, self.emb_dim)


class _SequenceModel(nn.Module):
    def __init__(self, count: int, emb_dim: int, rnn_dim: int, bidirectional: bool,
                 rnn_type: str) -> None:
        super().__init__()
        layers = residual_rnns(count, emb_dim, rnn_dim, bidirectional, rnn_type)
        # ZFTurbo's sequence interleaves the RNNs with transposes, which hold no weights:
        # the RNNs' names are the even positions.
        self.seqband = nn.ModuleDict({str(2 * i): layer for i, layer in enumerate(layers)})

    def forward(self, z: Tensor) -> Tensor:
        return run_sequence_model(list(self.seqband.values()), z)


class BandItV2(nn.Module):
    """ZFTurbo's ``models.bandit_v2.bandit.Bandit``, from its config's ``kwargs`` (the same
    names and defaults). Input (batch, channels, time); output (batch, stems, channels,
    time), the stems in ``stems`` order."""

    def __init__(self, in_channels: int, stems: list[str], band_type: str = "musical",
                 n_bands: int = 64, require_no_overlap: bool = False,
                 require_no_gap: bool = True, normalize_channel_independently: bool = False,
                 treat_channel_as_feature: bool = True, n_sqm_modules: int = 12,
                 emb_dim: int = 128, rnn_dim: int = 256, bidirectional: bool = True,
                 rnn_type: str = "LSTM", mlp_dim: int = 512, hidden_activation: str = "Tanh",
                 hidden_activation_kwargs: dict | None = None, complex_mask: bool = True,
                 use_freq_weights: bool = True, n_fft: int = 2048,
                 win_length: int | None = 2048, hop_length: int = 512,
                 window_fn: str = "hann_window", wkwargs: dict | None = None,
                 power: int | None = None, center: bool = True, normalized: bool = True,
                 pad_mode: str = "constant", onesided: bool = True, fs: int = 44100,
                 stft_precisions: Any = "32", bandsplit_precisions: Any = "bf16",
                 tf_model_precisions: Any = "bf16", mask_estim_precisions: Any = "bf16") -> None:
        super().__init__()
        del require_no_overlap, require_no_gap, stft_precisions, bandsplit_precisions
        del tf_model_precisions, mask_estim_precisions
        if in_channels != 1:
            raise ValueError(f"in_channels must be 1 (BandIt v2 folds the audio channels into "
                             f"the batch), not {in_channels!r}")
        if band_type != "musical":
            raise ValueError(f"band_type must be 'musical', not {band_type!r}")
        if power is not None:
            raise ValueError(f"power must be null (BandIt masks complex spectra), not {power!r}")
        if normalize_channel_independently is not False:
            raise ValueError("normalize_channel_independently is not implemented in BandIt v2")
        if treat_channel_as_feature is not True:
            raise ValueError("treat_channel_as_feature must be true in BandIt v2")
        self.stems = _stems(stems)
        self.stft, self.istft = spectral_pair(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, window_fn=window_fn,
            wkwargs=wkwargs, center=center, normalized=normalized, pad_mode=pad_mode,
            onesided=onesided)
        if not self.stft.onesided:
            raise ValueError("onesided must be true (BandIt's bands cover a one-sided "
                             "spectrum)")
        n_freqs = self.stft.n_fft // 2 + 1
        layout = musical_bands(self.stft.n_fft, fs, n_bands)
        check_bands(layout.bands)
        emb_dim = _whole("emb_dim", emb_dim)
        self.band_split = _BandSplit(layout, emb_dim)
        self.tf_model = _SequenceModel(2 * _whole("n_sqm_modules", n_sqm_modules), emb_dim,
                                       _whole("rnn_dim", rnn_dim),
                                       _flag("bidirectional", bidirectional), rnn_type)
        self.mask_estim = nn.ModuleDict({stem: MaskEstimator(
            layout, n_freqs, emb_dim, _whole("mlp_dim", mlp_dim),
            _flag("complex_mask", complex_mask), hidden_activation, hidden_activation_kwargs,
            _flag("use_freq_weights", use_freq_weights), keep_weights=False, head=_MaskHead)
            for stem in self.stems})

    def forward(self, mix: Tensor) -> Tensor:
        batch, channels, length = mix.shape
        spec = self.stft(mix.reshape(batch * channels, 1, length))  # (b c, 1, bins, frames)
        q = self.tf_model(self.band_split(spec))
        return torch.stack([
            self.istft(spec * estimator(q).to(spec.dtype), length).reshape(batch, channels,
                                                                             length)
            for estimator in self.mask_estim.values()], dim=1)
