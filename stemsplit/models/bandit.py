"""BandIt Plus: the band-split RNN of Watcharasupat et al. (BandIt, "cinematic audio source
separation": speech / music / effects), as ZFTurbo's Music-Source-Separation-Training runs it
(``model_type: bandit``: ``models/bandit/core/model/bsrnn/wrapper.py``,
``MultiMaskMultiSourceBandSplitRNNSimple``). Its state dict has exactly the keys and shapes
of ZFTurbo's class, so the published ``model_bandit_plus_dnr_sdr_11.47.chpt`` (a bare
state dict) loads with ``strict=True``. The parts BandIt v2 (``bandit_v2.py``) shares are
here too: the spectral transforms, the residual RNNs and the band heads' maths.

The maths, for a mixture (b, c, t):

* STFT of every channel: torchaudio's ``Spectrogram(power=None)``: ``torch.stft`` (centred,
  one-sided, of ``n_fft`` bins with a ``win_length`` window every ``hop_length`` samples),
  divided by the window's L2 norm when ``normalized`` is True (or "window"; "frame_length"
  is ``torch.stft``'s own normalisation). The channels become batch items: (b c, 1, F, T).
* Band split: each band's bins, real parts then imaginary parts (v1) or interleaved (v2),
  through LayerNorm and Linear to ``emb_dim``: (b c, bands, T, emb_dim).
* ``2 n_sqm_modules`` residual RNNs (LayerNorm, a one-layer (bi)directional GRU/LSTM/RNN,
  Linear back to ``emb_dim``, plus the input), alternately along time and along the bands.
* One mask estimator per stem: per band LayerNorm, Linear to ``mlp_dim``, the hidden
  activation, Linear to ``4 x width`` and a GLU: a complex (or real) mask over the band's
  bins, scaled by the band's per-bin weights (1 / the number of bands holding the bin) and
  summed into a full-spectrum mask. The mixture's spectrum times the mask, inverse STFT
  (torchaudio's ``InverseSpectrogram``, cut to the input length): (b, stems, c, t).

What ZFTurbo's BandIt Plus does that a reader of its config would not expect, reproduced
here:

* Its STFT ignores the config's STFT keys: its wrapper's constructor hands them to
  LightningModule, and the spectral part is built with its defaults (n_fft 2048, a 2048-
  sample periodic Hann window, hop 512, centred with zero padding, normalised, one-sided).
  The config's ``n_fft`` only sizes the bands (and so must be 2048); ``win_length``,
  ``hop_length``, ``window_fn``, ``wkwargs``, ``power``, ``center``, ``normalized``,
  ``pad_mode`` and ``onesided`` have no effect.
* ``require_no_gap`` and ``require_no_overlap`` change nothing (the mask estimators check
  the bands whatever they say, and the overlap check never fires); ``cond_dim`` neither
  (the overlapping bands' mask estimators are built without it), nor ``normalize_input``
  and ``freeze_encoder`` (training only).
* The frequency-weight buffers are in the state dict even when ``use_freq_weights`` is
  False (they are then not applied).

Model code never touches files, network or terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .bandsplit_bands import BandLayout, check_bands, musical_bands

__all__ = ["BandItPlus", "InverseShortTimeFourier", "ResidualRNN", "ShortTimeFourier",
           "band_layout"]

WINDOWS = ("hann_window", "hamming_window", "blackman_window", "bartlett_window",
           "kaiser_window")
RNN_TYPES = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}
ACTIVATIONS = ("ELU", "GELU", "GLU", "Hardshrink", "Hardsigmoid", "Hardswish", "Hardtanh",
               "LeakyReLU", "LogSigmoid", "Mish", "PReLU", "ReLU", "ReLU6", "RReLU", "SELU",
               "CELU", "SiLU", "Sigmoid", "Softplus", "Softshrink", "Softsign", "Tanh",
               "Tanhshrink", "Threshold", "Identity")
VOCAL_LAYOUTS = ("dnr:speech", "dnr:vox7", "musdb:vocals", "musdb:vox7")


# -- checks -----------------------------------------------------------------------------------
def _whole(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, not {value!r}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, not {value!r}")
    return value


def _stems(stems: Any) -> list[str]:
    if not isinstance(stems, (list, tuple)) or not stems or not all(
            isinstance(stem, str) and stem for stem in stems):
        raise ValueError(f"stems must be a list of stem names, not {stems!r}")
    if len(set(stems)) != len(stems):
        raise ValueError(f"stems names a stem twice ({list(stems)})")
    return list(stems)


def band_layout(kind: Any, n_fft: int, sample_rate: Any, n_bands: Any) -> BandLayout:
    """The bands a BandIt config's band type names (ValueError for one stemsplit does not
    compute: only "musical" is; the published configs all use it)."""
    if not isinstance(kind, str):
        raise TypeError(f"band specs must be a name such as 'musical', not {kind!r}")
    if kind not in VOCAL_LAYOUTS:
        # BandIt's own order of tests: a name holding "tribark", "bark", "erb", "musical"
        # or "mel" (in that order) picks that layout.
        for family in ("tribark", "bark", "erb", "musical", "mel"):
            if family in kind:
                if family == "musical":
                    if n_bands is None:
                        raise ValueError("the musical bands need n_bands")
                    layout = musical_bands(n_fft, sample_rate, n_bands)
                    check_bands(layout.bands)
                    return layout
                break
        else:
            raise ValueError(f"'{kind}' is not a band layout BandIt knows")
    raise ValueError(f"the '{kind}' band layout is not supported (stemsplit computes "
                     "'musical' bands)")


def _activation(name: Any, kwargs: Any) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_activation {name!r} is not a torch activation stemsplit "
                         "knows")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"hidden_activation_kwargs must be a mapping, not {kwargs!r}")
    return getattr(nn, name)(**(kwargs or {}))


# -- spectral transforms (torchaudio's Spectrogram and InverseSpectrogram) ---------------------
def _normalisation(normalized: Any) -> tuple[bool, bool]:
    """(torch.stft's frame-length normalisation, division by the window's L2 norm)."""
    if normalized is True or normalized == "window":
        return False, True
    if normalized is False:
        return False, False
    if normalized == "frame_length":
        return True, False
    raise ValueError(f"normalized must be true, false, 'window' or 'frame_length', not "
                     f"{normalized!r}")


class _Windowed(nn.Module):
    """An STFT's settings and its window (a buffer: ``window`` in the state dict)."""

    def __init__(self, n_fft: int = 2048, win_length: int | None = 2048, hop_length: int = 512,
                 window_fn: str = "hann_window", wkwargs: dict | None = None,
                 center: bool = True, normalized: Any = True, pad_mode: str = "constant",
                 onesided: bool = True) -> None:
        super().__init__()
        self.n_fft = _whole("n_fft", n_fft, 2)
        self.win_length = self.n_fft if win_length is None else _whole("win_length",
                                                                        win_length)
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) exceeds n_fft ({self.n_fft})")
        self.hop_length = _whole("hop_length", hop_length)
        if window_fn not in WINDOWS:
            raise ValueError(f"window_fn must be one of {', '.join(WINDOWS)}, not "
                             f"{window_fn!r}")
        if wkwargs is not None and not isinstance(wkwargs, dict):
            raise ValueError(f"wkwargs must be a mapping, not {wkwargs!r}")
        self.center = _flag("center", center)
        if pad_mode not in ("constant", "reflect", "replicate", "circular"):
            raise ValueError(f"pad_mode {pad_mode!r} is not one torch.stft takes")
        self.pad_mode = pad_mode
        self.onesided = _flag("onesided", onesided)
        self.frame_norm, self.window_norm = _normalisation(normalized)
        try:
            window = getattr(torch, window_fn)(self.win_length, **(wkwargs or {}))
        except TypeError as error:
            raise ValueError(f"wkwargs do not fit {window_fn}: {error}") from None
        self.register_buffer("window", window.float())

    def _scale(self) -> Tensor:
        return self.window.pow(2.0).sum().sqrt()


class ShortTimeFourier(_Windowed):
    """(..., time) -> complex (..., bins, frames), as torchaudio's Spectrogram(power=None)."""

    def forward(self, audio: Tensor) -> Tensor:
        shape = audio.shape
        spec = torch.stft(audio.reshape(-1, shape[-1]), self.n_fft, self.hop_length,
                          self.win_length, self.window, self.center, self.pad_mode,
                          self.frame_norm, self.onesided, return_complex=True)
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        if self.window_norm:
            spec /= self._scale()
        return spec


class InverseShortTimeFourier(_Windowed):
    """complex (..., bins, frames) -> (..., length), as torchaudio's InverseSpectrogram."""

    def forward(self, spec: Tensor, length: int) -> Tensor:
        if self.window_norm:
            spec = spec * self._scale()
        shape = spec.shape
        audio = torch.istft(spec.reshape(-1, shape[-2], shape[-1]), self.n_fft,
                            self.hop_length, self.win_length, self.window, self.center,
                            self.frame_norm, self.onesided, length=length,
                            return_complex=False)
        return audio.reshape(shape[:-2] + audio.shape[-1:])


def spectral_pair(**settings: Any) -> tuple[ShortTimeFourier, InverseShortTimeFourier]:
    return ShortTimeFourier(**settings), InverseShortTimeFourier(**settings)


# -- the sequence model -----------------------------------------------------------------------
class ResidualRNN(nn.Module):
    """LayerNorm, a one-layer RNN along axis 2 of (batch, rows, steps, emb), Linear back to
    ``emb_dim``, plus the input."""

    def __init__(self, emb_dim: int, rnn_dim: int, bidirectional: bool, rnn_type: str) -> None:
        super().__init__()
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {', '.join(RNN_TYPES)}, not "
                             f"{rnn_type!r}")
        self.norm = nn.LayerNorm(emb_dim)
        self.rnn = RNN_TYPES[rnn_type](input_size=emb_dim, hidden_size=rnn_dim, num_layers=1,
                                       batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(rnn_dim * (2 if bidirectional else 1), emb_dim)

    def forward(self, z: Tensor) -> Tensor:
        batch, rows, steps, width = z.shape
        y = self.norm(z).reshape(batch * rows, steps, width).contiguous()
        y = self.rnn(y)[0].reshape(batch, rows, steps, -1)
        return self.fc(y) + z


def residual_rnns(count: int, emb_dim: int, rnn_dim: int, bidirectional: bool,
                  rnn_type: str) -> list[ResidualRNN]:
    return [ResidualRNN(emb_dim, rnn_dim, bidirectional, rnn_type) for _ in range(count)]


def run_sequence_model(layers: Sequence[nn.Module], z: Tensor) -> Tensor:
    """(batch, bands, frames, emb): the RNNs in turn, along frames then along bands (each
    swaps the two axes after it; an even count of them ends in the input's layout)."""
    for layer in layers:
        z = layer(z).transpose(1, 2)
    return z


# -- band split and mask estimation -----------------------------------------------------------
def band_features(spec: Tensor, layout: BandLayout, interleaved: bool) -> list[Tensor]:
    """Each band's bins of a complex (batch, 1, bins, frames) spectrum as (batch, frames,
    2 x width) real features: real parts then imaginary parts (``interleaved`` False,
    BandIt v1) or real and imaginary of each bin in turn (BandIt v2)."""
    batch, channels, _, frames = spec.shape
    if interleaved:
        by_frame = spec.permute(0, 3, 1, 2).contiguous()  # (batch, frames, 1, bins)
        return [torch.view_as_real(by_frame[..., start:end]).reshape(batch, frames, -1)
                for start, end in layout.bands]
    planes = torch.view_as_real(spec).permute(0, 3, 1, 4, 2)  # (batch, frames, 1, 2, bins)
    return [planes[..., start:end].reshape(batch, frames, channels, -1).contiguous()
            .reshape(batch, frames, -1) for start, end in layout.bands]


def embed_bands(features: list[Tensor], encoders: Sequence[nn.Module], emb_dim: int) -> Tensor:
    """Each band's features through its encoder: (batch, bands, frames, emb_dim)."""
    batch, frames, _ = features[0].shape
    z = torch.zeros((batch, len(features), frames, emb_dim), device=features[0].device)
    for band, (feature, encoder) in enumerate(zip(features, encoders)):
        z[:, band] = encoder(feature)
    return z


class MaskHead(nn.Module):
    """One band's mask from the sequence model's output for the band: LayerNorm, Linear,
    activation, Linear, GLU; (batch, frames, emb) -> (batch, 1, width, frames)."""

    def __init__(self, emb_dim: int, mlp_dim: int, width: int, complex_mask: bool,
                 activation: str, activation_kwargs: dict | None) -> None:
        super().__init__()
        self.width = width
        self.complex_mask = complex_mask
        parts = 2 if complex_mask else 1
        self.norm = nn.LayerNorm(emb_dim)
        self.hidden = nn.Sequential(nn.Linear(emb_dim, mlp_dim),
                                    _activation(activation, activation_kwargs))
        self.output = nn.Sequential(nn.Linear(mlp_dim, width * parts * 2), nn.GLU(dim=-1))

    def forward(self, q: Tensor) -> Tensor:
        batch, frames, _ = q.shape
        m = self.output(self.hidden(self.norm(q)))
        if self.complex_mask:
            m = torch.view_as_complex(m.reshape(batch, frames, 1, self.width, 2).contiguous())
        else:
            m = m.reshape(batch, frames, 1, self.width)
        return m.permute(0, 2, 3, 1)


class MaskEstimator(nn.Module):
    """One stem's full-spectrum mask: every band's head, weighted per bin and summed.

    ``keep_weights``: whether the bands' weights are buffers (``freq_weights/<band>``)
    although ``use_freq_weights`` is False (BandIt v1 keeps them; v2 does not)."""

    def __init__(self, layout: BandLayout, n_freqs: int, emb_dim: int, mlp_dim: int,
                 complex_mask: bool, activation: str, activation_kwargs: dict | None,
                 use_freq_weights: bool, keep_weights: bool,
                 head: type[MaskHead] = MaskHead) -> None:
        super().__init__()
        self.bands = layout.bands
        self.n_freqs = n_freqs
        self.complex_mask = complex_mask
        self.norm_mlp = nn.ModuleList(
            head(emb_dim, mlp_dim, width, complex_mask, activation, activation_kwargs)
            for width in layout.widths)
        self.use_freq_weights = use_freq_weights and bool(layout.weights)
        if layout.weights and (use_freq_weights or keep_weights):
            for band, weights in enumerate(layout.weights):
                self.register_buffer(f"freq_weights/{band}",
                                     torch.from_numpy(weights).float())

    def forward(self, q: Tensor) -> Tensor:
        """(batch, bands, frames, emb) -> (batch, 1, bins, frames)."""
        batch, _, frames, _ = q.shape
        dtype = torch.complex64 if self.complex_mask else torch.float32
        masks = torch.zeros((batch, 1, self.n_freqs, frames), device=q.device, dtype=dtype)
        for band, ((start, end), head) in enumerate(zip(self.bands, self.norm_mlp)):
            mask = head(q[:, band])
            if self.use_freq_weights:
                mask = mask * self.get_buffer(f"freq_weights/{band}")[:, None]
            masks[:, :, start:end] += mask
        return masks


# -- BandIt Plus (v1) -------------------------------------------------------------------------
class _BandEncoder(nn.Module):
    """v1's band encoder: ``norm`` (LayerNorm) then ``fc`` (Linear)."""

    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(2 * width)
        self.fc = nn.Linear(2 * width, emb_dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.norm(features))


class _BandSplit(nn.Module):
    def __init__(self, layout: BandLayout, emb_dim: int) -> None:
        super().__init__()
        self.layout = layout
        self.emb_dim = emb_dim
        self.norm_fc_modules = nn.ModuleList(_BandEncoder(w, emb_dim) for w in layout.widths)

    def forward(self, spec: Tensor) -> Tensor:
        return embed_bands(band_features(spec, self.layout, interleaved=False),
                           self.norm_fc_modules, self.emb_dim)


class _SequenceModel(nn.Module):
    def __init__(self, count: int, emb_dim: int, rnn_dim: int, bidirectional: bool,
                 rnn_type: str) -> None:
        super().__init__()
        self.seqband = nn.ModuleList(residual_rnns(count, emb_dim, rnn_dim, bidirectional,
                                                   rnn_type))

    def forward(self, z: Tensor) -> Tensor:
        return run_sequence_model(self.seqband, z)


class _Core(nn.Module):
    """``bsrnn``: band split, sequence model, one mask estimator per stem."""

    def __init__(self, stems: list[str], layout: BandLayout, n_freqs: int, emb_dim: int,
                 n_sqm_modules: int, rnn_dim: int, bidirectional: bool, rnn_type: str,
                 mlp_dim: int, complex_mask: bool, activation: str,
                 activation_kwargs: dict | None, use_freq_weights: bool) -> None:
        super().__init__()
        self.band_split = _BandSplit(layout, emb_dim)
        self.tf_model = _SequenceModel(2 * n_sqm_modules, emb_dim, rnn_dim, bidirectional,
                                       rnn_type)
        self.mask_estim = nn.ModuleDict({stem: MaskEstimator(
            layout, n_freqs, emb_dim, mlp_dim, complex_mask, activation, activation_kwargs,
            use_freq_weights, keep_weights=True) for stem in stems})

    def forward(self, spec: Tensor) -> list[Tensor]:
        q = self.tf_model(self.band_split(spec))
        return [spec * estimator(q) for estimator in self.mask_estim.values()]


class BandItPlus(nn.Module):
    """ZFTurbo's ``MultiMaskMultiSourceBandSplitRNNSimple``, from its config's ``model``
    keywords (the same names and defaults). Input (batch, channels, time); output (batch,
    stems, channels, time), the stems in ``stems`` order."""

    def __init__(self, in_channel: int, stems: list[str], band_specs: str, fs: int = 44100,
                 require_no_overlap: bool = False, require_no_gap: bool = True,
                 normalize_channel_independently: bool = False,
                 treat_channel_as_feature: bool = True, n_sqm_modules: int = 12,
                 emb_dim: int = 128, rnn_dim: int = 256, cond_dim: int = 0,
                 bidirectional: bool = True, rnn_type: str = "LSTM", mlp_dim: int = 512,
                 hidden_activation: str = "Tanh", hidden_activation_kwargs: dict | None = None,
                 complex_mask: bool = True, n_fft: int = 2048, win_length: int | None = 2048,
                 hop_length: int = 512, window_fn: str = "hann_window",
                 wkwargs: dict | None = None, power: int | None = None, center: bool = True,
                 normalized: bool = True, pad_mode: str = "constant", onesided: bool = True,
                 n_bands: int | None = None, use_freq_weights: bool = True,
                 normalize_input: bool = False, mult_add_mask: bool = False,
                 freeze_encoder: bool = False) -> None:
        super().__init__()
        # win_length ... onesided, require_no_*, cond_dim, normalize_input and freeze_encoder
        # change nothing in ZFTurbo's network (see the module's docstring).
        del win_length, hop_length, window_fn, wkwargs, power, center, normalized, pad_mode
        del onesided, require_no_overlap, require_no_gap, normalize_input, freeze_encoder
        _whole("cond_dim", cond_dim, 0)
        if in_channel != 1:
            raise ValueError(f"in_channel must be 1 (BandIt folds the audio channels into the "
                             f"batch), not {in_channel!r}")
        if normalize_channel_independently is not False:
            raise ValueError("normalize_channel_independently is not implemented in BandIt")
        _flag("treat_channel_as_feature", treat_channel_as_feature)
        if mult_add_mask is not False:
            raise ValueError("mult_add_mask: BandIt's multiply-add masks cannot be built "
                             "(ZFTurbo's code lacks their module)")
        self.stems = _stems(stems)
        self.stft, self.istft = spectral_pair()  # the defaults, as ZFTurbo's wrapper's
        n_freqs = self.stft.n_fft // 2 + 1
        if _whole("n_fft", n_fft, 2) // 2 + 1 != n_freqs:
            raise ValueError(f"n_fft must be 2048, not {n_fft} (ZFTurbo's BandIt Plus always "
                             "takes a 2048-bin STFT; n_fft only sizes its bands)")
        layout = band_layout(band_specs, n_fft, fs, n_bands)
        self.bsrnn = _Core(
            self.stems, layout, n_freqs, _whole("emb_dim", emb_dim),
            _whole("n_sqm_modules", n_sqm_modules), _whole("rnn_dim", rnn_dim),
            _flag("bidirectional", bidirectional), rnn_type, _whole("mlp_dim", mlp_dim),
            _flag("complex_mask", complex_mask),
            hidden_activation, hidden_activation_kwargs,
            _flag("use_freq_weights", use_freq_weights))

    def forward(self, mix: Tensor) -> Tensor:
        batch, channels, length = mix.shape
        spec = self.stft(mix)  # (batch, channels, bins, frames)
        bins, frames = spec.shape[-2:]
        estimates = self.bsrnn(spec.reshape(batch * channels, 1, bins, frames))
        return torch.stack([self.istft(s.reshape(batch, channels, bins, frames), length)
                            for s in estimates], dim=1)
