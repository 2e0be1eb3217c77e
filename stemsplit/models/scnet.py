"""SCNet (Tong et al. 2024, "SCNet: Sparse Compression Network for Music Source
Separation") and its masked variant, as ZFTurbo's Music-Source-Separation-Training defines
them (``models/scnet/scnet.py`` with ``separation.py``, and ``models/scnet/scnet_masked.py``).
Same constructor keywords, same state_dict keys and shapes, so the published ``.ckpt`` files
load with ``strict=True``. SCNet-Tran (``scnet_tran.py``) is this network with transformers
in place of the LSTMs.

The maths (b batch, a audio channels, S sources, F frequency rows, T frames):

* The input (b, a, L) is zero-padded at its end so that the centred STFT gives an even
  number of frames (the padded length is an odd multiple of ``hop_size``; see
  :func:`end_padding`), then every channel is STFT'd: plain SCNet with a rectangular window
  of ``win_size`` (``torch.stft`` without a window), the masked SCNet with a periodic Hann
  window. Real and imaginary planes become channels, (b, 2a, F, T), plane 2 * ch + (0 real,
  1 imaginary); ``dims[0]`` must be 2a.
* Masked only: a learnt positional embedding per frequency row (``pos_embed_f``) is added.
* Encoder, one block per step of ``dims``: the rows are cut into a low, a mid and a high
  band (the first ``ceil(F * band_SR[0])`` rows, up to ``ceil(F * (band_SR[0] +
  band_SR[1]))``, the rest); each band goes through a (kernel, 1) convolution with stride
  (stride, 1) after zero rows make its length fit (kernel - 1 rows for stride 1, else up to
  a multiple of the stride, split evenly with the extra one after), then a convolution
  module along time per row (``conv_depths`` residual layers of GroupNorm, Conv1d, GLU,
  depthwise Conv1d, GroupNorm, SiLU, 1x1 Conv1d), then GELU. The bands, joined again, are
  the block's skip; a 3x3 convolution of them is its output.
* Separation network: ``num_dplayer`` dual-path layers at ``dims[-1]`` channels. Each adds
  a bidirectional LSTM along the rows and one along the frames (each after a one-group
  GroupNorm, with a Linear back to the width). Between layers the frame axis alternates
  between time and its orthonormal real FFT (even layers are followed by ``rfft``, the real
  and imaginary planes stacked as channels, so odd layers run at twice the width; odd
  layers are followed by the inverse), hence an even ``num_dplayer`` and frame count.
* Decoder, mirroring the encoder: the skip is added, a 3x3 convolution of the signal
  repeated twice along the channels then GLU, and per band a transposed (kernel, 1)
  convolution with stride (stride, 1) whose output is cut (centred) to the band's length
  before its down-sampling. The last one gives ``dims[0] * S`` channels: (b, S * 2a, F, T),
  plane (s * a + ch) * 2 + (0 real, 1 imaginary).
* Plain: those planes are the sources' spectrograms. Masked: a 3x3 convolution (to 64),
  GELU, a 1x1 convolution and tanh make them a complex mask (real and imaginary parts each
  in (-1, 1)) that multiplies the mixture's spectrogram of the same channel.
* Inverse STFT (same window), cut to the input's length: (b, S, a, L).

How we compute it differs only where the sums are the same up to float reassociation: the
fusion convolution of the signal repeated twice is a convolution of the signal with the two
halves of its weight added.

Model code never touches files, network or terminal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskedSCNet", "SCNet", "end_padding", "shortest_chunk"]

DEFAULT_SOURCES = ("drums", "bass", "other", "vocals")
MASK_HIDDEN = 64
"""The masked SCNet's mask network width (fixed in ZFTurbo's code)."""


def end_padding(length: int, hop: int) -> int:
    """The zeros SCNet adds after ``length`` samples: at least one, and as many as make the
    padded length an odd multiple of ``hop`` (the centred STFT then has an even number of
    frames, which the separation network's real FFT along the frames needs)."""
    padding = hop - length % hop
    if (length + padding) // hop % 2 == 0:
        padding += hop
    return padding


def shortest_chunk(nfft: int, hop: int) -> int:
    """The fewest samples SCNet takes: its centred STFT reflects ``nfft // 2`` samples at
    each end, which must be fewer than the padded input has. The padded length is the
    smallest odd multiple of ``hop`` above the length, so the shortest input is two hops
    below the smallest odd multiple above ``nfft // 2``."""
    multiple = nfft // 2 // hop + 1
    if multiple % 2 == 0:
        multiple += 1
    return max(1, (multiple - 2) * hop)


@dataclass(frozen=True)
class Band:
    """One of the three frequency bands every encoder and decoder block cuts the rows into."""

    share: float
    """The part of the rows it takes (the high band takes the rest)."""
    stride: int
    kernel: int


def band_edges(rows: int, bands: Sequence[Band]) -> list[tuple[int, int]]:
    """(start, end) of the low, mid and high bands of ``rows`` rows."""
    low_end = math.ceil(rows * bands[0].share)
    mid_end = math.ceil(rows * (bands[0].share + bands[1].share))
    return [(0, low_end), (low_end, mid_end), (mid_end, rows)]


def _check_triple(name: str, values: Sequence, kinds: tuple[type, ...], what: str) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise ValueError(f"{name} must list three values (low, mid, high bands), not {values!r}")
    if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must list three {what}, not {list(values)!r}")
    return tuple(values)


class ConvolutionModule(nn.Module):
    """Residual layers along time: GroupNorm, Conv1d to twice the hidden width, GLU,
    depthwise Conv1d, GroupNorm, SiLU, 1x1 Conv1d back (keys ``layers.N.{0,1,3,4,6}``)."""

    def __init__(self, channels: int, depth: int, compress: float, kernel: int) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"conv_kernel must be odd, not {kernel}")
        hidden = int(channels / compress)
        if hidden < 1:
            raise ValueError(f"compress={compress} leaves no channels of {channels}")
        pad = kernel // 2
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(1, channels),
                nn.Conv1d(channels, 2 * hidden, kernel, padding=pad),
                nn.GLU(dim=1),
                nn.Conv1d(hidden, hidden, kernel, padding=pad, groups=hidden),
                nn.GroupNorm(1, hidden),
                nn.SiLU(),
                nn.Conv1d(hidden, channels, 1),
            )
            for _ in range(abs(depth))
        )

    def forward(self, x: Tensor) -> Tensor:
        """(n, channels, time) -> the same shape."""
        for layer in self.layers:
            x = x + layer(x)
        return x


class SparseDownsample(nn.Module):
    """Per band, a strided (kernel, 1) convolution along the rows (ZFTurbo's ``SDlayer``)."""

    def __init__(self, channels_in: int, channels_out: int, bands: Sequence[Band]) -> None:
        super().__init__()
        self.bands = tuple(bands)
        self.convs = nn.ModuleList(
            nn.Conv2d(channels_in, channels_out, (band.kernel, 1), (band.stride, 1))
            for band in self.bands
        )

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[int]]:
        """(b, c, rows, t) -> each band's output and each band's rows before it."""
        outputs, sizes = [], []
        for conv, band, (start, end) in zip(self.convs, self.bands, band_edges(x.shape[2], self.bands)):
            size = end - start
            extra = band.kernel - 1 if band.stride == 1 else -size % band.stride
            before = extra // 2
            outputs.append(conv(F.pad(x[:, :, start:end], (0, 0, before, extra - before))))
            sizes.append(size)
        return outputs, sizes


class SparseUpsample(nn.Module):
    """Per band, a transposed (kernel, 1) convolution with stride (stride, 1), cut (centred)
    to the band's rows before down-sampling (ZFTurbo's ``SUlayer``)."""

    def __init__(self, channels_in: int, channels_out: int, bands: Sequence[Band]) -> None:
        super().__init__()
        self.convtrs = nn.ModuleList(
            nn.ConvTranspose2d(channels_in, channels_out, (band.kernel, 1), (band.stride, 1))
            for band in bands
        )

    def forward(self, x: Tensor, down_sizes: Sequence[int], sizes: Sequence[int]) -> Tensor:
        """``down_sizes``: the bands' rows in ``x``; ``sizes``: their rows to give back."""
        outputs, start = [], 0
        for index, convtr in enumerate(self.convtrs):
            end = start + down_sizes[index] if index < len(self.convtrs) - 1 else x.shape[2]
            out = convtr(x[:, :, start:end])
            offset = abs(sizes[index] - out.shape[2]) // 2
            outputs.append(out[:, :, offset : offset + sizes[index]])
            start = end
        return torch.cat(outputs, dim=2)


class EncoderBlock(nn.Module):
    """Sparse down-sampling, a convolution module per band, GELU; the joined bands are the
    skip, their 3x3 convolution the output (ZFTurbo's ``SDblock``; the attribute names are
    its state_dict keys)."""

    def __init__(self, channels_in: int, channels_out: int, bands: Sequence[Band],
                 depths: Sequence[int], compress: float, kernel: int) -> None:
        super().__init__()
        self.SDlayer = SparseDownsample(channels_in, channels_out, bands)
        self.conv_modules = nn.ModuleList(
            ConvolutionModule(channels_out, depth, compress, kernel) for depth in depths
        )
        self.globalconv = nn.Conv2d(channels_out, channels_out, 3, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[int], list[int]]:
        """(b, c_in, rows, t) -> output, skip (b, c_out, rows', t), the bands' rows after
        and before down-sampling."""
        bands, sizes = self.SDlayer(x)
        processed = []
        for module, band in zip(self.conv_modules, bands):
            b, c, rows, t = band.shape
            per_row = band.permute(0, 2, 1, 3).reshape(b * rows, c, t)
            out = module(per_row).view(b, rows, c, t).permute(0, 2, 1, 3)
            processed.append(F.gelu(out))
        skip = torch.cat(processed, dim=2)
        return self.globalconv(skip), skip, [band.shape[2] for band in processed], sizes


class FusionLayer(nn.Module):
    """Adds the skip; a 3x3 convolution of the signal repeated twice along the channels
    (computed as one of the signal with the weight's two input halves summed); GLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, 3, 1, 1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = x + skip
        weight = self.conv.weight
        half = weight.shape[1] // 2
        folded = weight[:, :half] + weight[:, half:]
        return F.glu(F.conv2d(x, folded, self.conv.bias, padding=1), dim=1)


class DualPathRNN(nn.Module):
    """A bidirectional LSTM along the rows, then one along the frames; each after a
    one-group GroupNorm, with a Linear back to the width and a residual."""

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.lstm_layers = nn.ModuleList(
            nn.LSTM(channels, hidden, num_layers=1, bidirectional=True, batch_first=True)
            for _ in range(2)
        )
        self.linear_layers = nn.ModuleList(nn.Linear(2 * hidden, channels) for _ in range(2))
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, channels) for _ in range(2))

    def _along(self, index: int, x: Tensor) -> Tensor:
        """The LSTM and Linear ``index`` over x (n, sequence, channels)."""
        out, _ = self.lstm_layers[index](x)
        return self.linear_layers[index](out)

    def forward(self, x: Tensor) -> Tensor:
        b, c, rows, t = x.shape
        along_rows = self.norm_layers[0](x).permute(0, 3, 2, 1).reshape(b * t, rows, c)
        x = x + self._along(0, along_rows).view(b, t, rows, c).permute(0, 3, 2, 1)
        along_time = self.norm_layers[1](x).permute(0, 2, 3, 1).reshape(b * rows, t, c)
        return x + self._along(1, along_time).view(b, rows, t, c).permute(0, 3, 1, 2)


class SeparationNet(nn.Module):
    """``num_layers`` dual-path layers (``dp_modules``); after an even layer the frame axis
    becomes its orthonormal real FFT (real and imaginary planes stacked as channels), after
    an odd one it comes back."""

    def __init__(self, channels: int, num_layers: int,
                 dual_path: Callable[[int], nn.Module]) -> None:
        super().__init__()
        if num_layers % 2:
            raise ValueError(f"num_dplayer must be even (the frame axis goes to its FFT and "
                             f"back in pairs of layers), not {num_layers}")
        self.channels = channels
        self.dp_modules = nn.ModuleList(
            dual_path(channels * (2 if index % 2 else 1)) for index in range(num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.dp_modules):
            x = layer(x)
            if index % 2 == 0:
                spectrum = torch.fft.rfft(x.float(), dim=3, norm="ortho")
                x = torch.cat([spectrum.real, spectrum.imag], dim=1)
            else:
                half = x.shape[1] // 2
                x = torch.fft.irfft(torch.complex(x[:, :half], x[:, half:]), dim=3, norm="ortho")
        return x


class SCNet(nn.Module):
    """SCNet as ZFTurbo's ``models.scnet.SCNet`` (``masked`` False) and
    ``models.scnet.scnet_masked.SCNet`` (:class:`MaskedSCNet`). mix (batch, audio_channels,
    time) -> (batch, sources, audio_channels, time)."""

    masked = False

    def __init__(
        self,
        sources: Sequence[str] = DEFAULT_SOURCES,
        audio_channels: int = 2,
        dims: Sequence[int] = (4, 32, 64, 128),
        nfft: int = 4096,
        hop_size: int = 1024,
        win_size: int = 4096,
        normalized: bool = True,
        band_SR: Sequence[float] = (0.175, 0.392, 0.433),
        band_stride: Sequence[int] = (1, 4, 16),
        band_kernel: Sequence[int] = (3, 4, 16),
        conv_depths: Sequence[int] = (3, 2, 1),
        compress: float = 4,
        conv_kernel: int = 3,
        num_dplayer: int = 6,
        expand: int = 1,
    ) -> None:
        super().__init__()
        self._build(sources=sources, audio_channels=audio_channels, dims=dims, nfft=nfft,
                    hop_size=hop_size, win_size=win_size, normalized=normalized,
                    band_SR=band_SR, band_stride=band_stride, band_kernel=band_kernel,
                    conv_depths=conv_depths, compress=compress, conv_kernel=conv_kernel)
        self.separation_net = SeparationNet(
            self.dims[-1], num_dplayer, lambda channels: DualPathRNN(channels, expand))

    def _build(self, *, sources: Sequence[str], audio_channels: int, dims: Sequence[int],
               nfft: int, hop_size: int, win_size: int, normalized: bool,
               band_SR: Sequence[float], band_stride: Sequence[int],
               band_kernel: Sequence[int], conv_depths: Sequence[int], compress: float,
               conv_kernel: int) -> None:
        """Everything but the separation network."""
        if isinstance(sources, str) or not isinstance(sources, Sequence) or not sources:
            raise ValueError(f"sources must list the stems, not {sources!r}")
        self.sources = tuple(sources)
        self.audio_channels = int(audio_channels)
        self.dims = tuple(int(d) for d in dims)
        if len(self.dims) < 2:
            raise ValueError(f"dims needs at least two widths, not {list(dims)}")
        if self.dims[0] != 2 * self.audio_channels:
            raise ValueError(f"dims[0] must be 2 * audio_channels = {2 * self.audio_channels} "
                             f"(real and imaginary planes per channel), not {self.dims[0]}")
        if win_size > nfft or hop_size < 1:
            raise ValueError(f"win_size ({win_size}) must be at most nfft ({nfft}) and hop_size "
                             f"positive ({hop_size})")
        shares = _check_triple("band_SR", band_SR, (int, float), "numbers")
        strides = _check_triple("band_stride", band_stride, (int,), "whole numbers")
        kernels = _check_triple("band_kernel", band_kernel, (int,), "whole numbers")
        self.bands = tuple(Band(float(s), st, k) for s, st, k in zip(shares, strides, kernels))
        self.nfft, self.hop_size, self.win_size = int(nfft), int(hop_size), int(win_size)
        self.normalized = bool(normalized)

        self.encoder = nn.ModuleList()
        decoder = []
        for index, (width_in, width_out) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            self.encoder.append(EncoderBlock(width_in, width_out, self.bands, conv_depths,
                                             compress, conv_kernel))
            width_back = width_in * len(self.sources) if index == 0 else width_in
            decoder.append(nn.ModuleList([FusionLayer(width_out),
                                          SparseUpsample(width_out, width_back, self.bands)]))
        self.decoder = nn.ModuleList(reversed(decoder))  # deepest first, as ZFTurbo's keys

        if self.masked:
            if win_size != nfft:
                raise ValueError(f"the masked SCNet's Hann window is nfft long: win_size "
                                 f"({win_size}) must equal nfft ({nfft})")
            if self.dims[0] != 4:
                raise ValueError("the masked SCNet's mask network takes stereo (dims[0] = 4)")
            planes = 4 * len(self.sources)
            self.pos_embed_f = nn.Parameter(torch.zeros(1, self.dims[0], nfft // 2 + 1, 1))
            self.mask_layer = nn.Sequential(
                nn.Conv2d(planes, MASK_HIDDEN, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(MASK_HIDDEN, planes, 1),
                nn.Tanh(),
            )
            window = torch.hann_window(nfft, periodic=True)
        else:
            window = torch.ones(win_size)  # torch.stft's window when none is given
        self.register_buffer("window", window, persistent=False)

    # -- the STFT ------------------------------------------------------------------------
    def _stft(self, audio: Tensor) -> Tensor:
        return torch.stft(audio, n_fft=self.nfft, hop_length=self.hop_size,
                          win_length=self.win_size, window=self.window, center=True,
                          normalized=self.normalized, return_complex=True)

    def _istft(self, spec: Tensor) -> Tensor:
        return torch.istft(spec, n_fft=self.nfft, hop_length=self.hop_size,
                           win_length=self.win_size, window=self.window, center=True,
                           normalized=self.normalized)

    @torch.no_grad()
    def forward(self, mix: Tensor) -> Tensor:
        """(batch, audio_channels, time) -> (batch, sources, audio_channels, time)."""
        if mix.ndim != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"expected mix of shape (batch, {self.audio_channels}, time), "
                             f"got {tuple(mix.shape)}")
        batch, channels, length = mix.shape
        padded = F.pad(mix.float(), (0, end_padding(length, self.hop_size)))
        spec = self._stft(padded.reshape(batch * channels, -1))
        rows, frames = spec.shape[-2:]
        x = torch.view_as_real(spec).permute(0, 3, 1, 2).reshape(batch, 2 * channels, rows, frames)
        mixture = x
        if self.masked:
            x = x + self.pos_embed_f[:, :, :rows]

        saved = []
        for block in self.encoder:
            x, skip, down_sizes, sizes = block(x)
            saved.append((skip, down_sizes, sizes))
        x = self.separation_net(x)
        for (fusion, upsample), (skip, down_sizes, sizes) in zip(self.decoder, reversed(saved)):
            x = upsample(fusion(x, skip), down_sizes, sizes)

        n_sources = len(self.sources)
        if self.masked:
            # float32 again for the complex maths (autocast leaves 16-bit planes here)
            planes = self.mask_layer(x).float().view(batch, n_sources, channels, 2, rows, frames)
            mask = torch.complex(planes[:, :, :, 0], planes[:, :, :, 1])
            planes = mixture.view(batch, 1, channels, 2, rows, frames)
            spec = torch.complex(planes[:, :, :, 0], planes[:, :, :, 1]) * mask
        else:
            planes = x.float().view(batch, n_sources, channels, 2, rows, frames)
            spec = torch.complex(planes[:, :, :, 0], planes[:, :, :, 1])
        audio = self._istft(spec.reshape(batch * n_sources * channels, rows, frames))
        return audio.view(batch, n_sources, channels, -1)[..., :length]


class MaskedSCNet(SCNet):
    """ZFTurbo's ``models.scnet.scnet_masked.SCNet``: Hann-windowed STFT, a positional
    embedding per frequency row, and a tanh complex mask on the mixture."""

    masked = True
