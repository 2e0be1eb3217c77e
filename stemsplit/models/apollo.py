"""Apollo (Li and Luo, 2024): band-sequence restoration of lossy-coded music, as JusperLee
publishes it and ZFTurbo's Music-Source-Separation-Training runs it
(``models/look2hear/models/apollo.py``, built by ``BaseModel.apollo(**config.model)``).

The constructor takes the config's ``model`` keywords (``sr``, ``win`` in milliseconds,
``feature_dim``, ``layer``); the state dict has exactly the published keys and shapes,
the rotary tables (``net.<l>.band_net.cos_freq`` / ``sin_freq``) included, so a published
``pytorch_model.bin`` loads with ``strict=True``.

The maths (n = batch x channels: every audio channel is restored on its own, as a batch
item; F STFT bins, T frames, K = 80 bands, D = ``feature_dim``):

* The STFT window is ``w = floor(sr * win / 1000)`` samples (882 at 44.1 kHz and 20 ms), the
  hop ``w // 2`` (441), a periodic Hann window, centred with reflection padding:
  F = w // 2 + 1 bins (442). The bins are cut into 80 contiguous bands: 79 of
  ``b = floor(w / 160)`` bins (5) and a last one with the rest (47).
* Band input: each band's complex bins divided by its power
  ``p = sqrt(sum |X|^2 + eps)`` (eps = float32's machine epsilon), real parts, imaginary
  parts and ``log p`` stacked as 2b + 1 channels; an RMS norm over them and a 1x1
  convolution to D: (n, K, D, T).
* ``layer`` blocks, each (no residual around the block itself):

  - across bands, per frame: a pre-norm transformer over the K band tokens (8 heads of
    ``D // 8``, rotary positions on queries and keys with interleaved pairs and base
    10000, tables of 100 positions; no mask), 1x1 convolutions without bias for q/k/v and
    the output, a residual; then an RMS-norm MLP ``D -> 8D``, SiLU, split into halves g, z,
    ``D <- 4D`` of ``silu(g) * z`` (SiLU twice on g: as the published network does),
    a residual;
  - along time, per band: three residual blocks of depthwise conv (kernel 7, same
    padding) - RMS norm - 1x1 conv D -> 4D - SiLU - 1x1 conv 4D -> D.

* Band output: RMS norm, 1x1 conv D -> 4b, GLU over channels: 2b channels, the real then
  the imaginary parts of the band's bins (the spectrum itself, not a mask); the bands
  joined, inverse STFT (same window) to the input's length.

The RMS norms normalise over channels with epsilon 1e-5 and a learnt scale.

Model code never touches files, network or terminal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NUM_BANDS", "Apollo", "window_samples"]

NUM_BANDS = 80
"""The network always splits the spectrum into 80 bands."""
HEADS = 8
ROTARY_POSITIONS = 100
ROTARY_BASE = 10000.0
KERNEL = 7


def window_samples(sr: int, win: float) -> int:
    """The STFT window in samples for ``sr`` Hz and ``win`` milliseconds (882 for 44100, 20)."""
    return int(sr * win // 1000)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, the mean square over the channel axis (dim 1) of (n, C, L)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-5)
        return x * scale * self.weight[:, None]


def _pointwise(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """A 1x1 convolution of (n, C, L) as a matrix product."""
    out = torch.matmul(conv.weight[:, :, 0], x)
    return out if conv.bias is None else out + conv.bias[:, None]


def _rotary_tables(positions: int, dim: int) -> tuple[Tensor, Tensor]:
    """cos and sin of ``position * base^(-2i / dim)``, each angle repeated for the two members
    of pair i: (positions, dim)."""
    exponents = torch.arange(0, dim, 2)[: dim // 2] / dim
    inverse = 1.0 / (ROTARY_BASE ** exponents)
    angles = torch.arange(positions)[:, None] * inverse[None, :]
    return (torch.cos(angles).repeat_interleave(2, dim=-1),
            torch.sin(angles).repeat_interleave(2, dim=-1))


class _BandTransformer(nn.Module):
    """One pre-norm attention + gated MLP layer over the band tokens: (m, D, K) -> (m, D, K).
    Attribute names are the published ones (``weight`` is the q/k/v projection)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.head_dim = dim // HEADS
        cos, sin = _rotary_tables(ROTARY_POSITIONS, self.head_dim)
        self.register_buffer("cos_freq", cos)
        self.register_buffer("sin_freq", sin)
        inner = self.head_dim * HEADS
        self.input_norm = RMSNorm(dim)
        self.weight = nn.Conv1d(dim, 3 * inner, 1, bias=False)
        self.output = nn.Conv1d(inner, dim, 1, bias=False)
        self.MLP = nn.Sequential(RMSNorm(dim), nn.Conv1d(dim, 8 * dim, 1, bias=False), nn.SiLU())
        self.MLP_output = nn.Conv1d(4 * dim, dim, 1, bias=False)

    def _rotate(self, x: Tensor) -> Tensor:
        """Rotary positions on (m, heads, L, e): pairs (a, b) -> (a cos - b sin, b cos + a sin)."""
        length, e = x.shape[-2:]
        pairs = x.unflatten(-1, (e // 2, 2))
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * self.cos_freq[:length] + turned * self.sin_freq[:length]

    def forward(self, x: Tensor) -> Tensor:
        m, _, length = x.shape
        e = self.head_dim
        qkv = _pointwise(self.input_norm(x), self.weight)             # (m, heads * 3e, L)
        qkv = qkv.view(m, HEADS, 3 * e, length).transpose(-1, -2)     # (m, heads, L, 3e)
        q, k, v = qkv.split(e, dim=-1)
        attended = F.scaled_dot_product_attention(
            self._rotate(q).contiguous(), self._rotate(k).contiguous(), v.contiguous())
        attended = attended.transpose(-1, -2).reshape(m, HEADS * e, length)
        x = _pointwise(attended, self.output) + x
        hidden = F.silu(_pointwise(self.MLP[0](x), self.MLP[1]))
        gate, z = hidden.chunk(2, dim=1)
        return x + _pointwise(F.silu(gate) * z, self.MLP_output)


class _ConvBlock(nn.Module):
    """Residual depthwise conv - RMS norm - 1x1 up - SiLU - 1x1 down, on (m, D, T).
    ``conv`` keeps the published Sequential's indices (0, 1, 2, 4)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(dim, dim, KERNEL, padding=(KERNEL - 1) // 2, groups=dim),
            RMSNorm(dim),
            nn.Conv1d(dim, 4 * dim, 1),
            nn.SiLU(),
            nn.Conv1d(4 * dim, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        depthwise, norm, up, _, down = self.conv
        h = norm(depthwise(x))
        return x + _pointwise(F.silu(_pointwise(h, up)), down)


class _TimeConvs(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(_ConvBlock(dim), _ConvBlock(dim), _ConvBlock(dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class _BandSequenceBlock(nn.Module):
    """Across the bands, then along time: (n, K, D, T) -> (n, K, D, T)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.band_net = _BandTransformer(dim)
        self.seq_net = _TimeConvs(dim)

    def forward(self, x: Tensor) -> Tensor:
        n, bands, dim, frames = x.shape
        tokens = x.permute(0, 3, 2, 1).reshape(n * frames, dim, bands)
        tokens = self.band_net(tokens).view(n, frames, dim, bands)
        per_band = tokens.permute(0, 3, 2, 1).reshape(n * bands, dim, frames)
        return self.seq_net(per_band).view(n, bands, dim, frames)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive whole number, not {value!r}")
    return value


class Apollo(nn.Module):
    """(batch, channels, time) -> (batch, 1, channels, time): the restored audio."""

    def __init__(self, sr: int, win: float, feature_dim: int, layer: int) -> None:
        super().__init__()
        sr = _positive_int("sr", sr)
        feature_dim = _positive_int("feature_dim", feature_dim)
        layer = _positive_int("layer", layer)
        if isinstance(win, bool) or not isinstance(win, (int, float)) or not win > 0:
            raise ValueError(f"win must be a positive number of milliseconds, not {win!r}")
        self.n_fft = window_samples(sr, win)
        if self.n_fft < 2 * NUM_BANDS:
            raise ValueError(f"a window of {self.n_fft} samples (sr {sr} x win {win} ms) is too "
                             f"short for {NUM_BANDS} bands: it needs {2 * NUM_BANDS} or more")
        if feature_dim // HEADS < 2 or (feature_dim // HEADS) % 2:
            raise ValueError(f"feature_dim {feature_dim}: its {HEADS} attention heads need an "
                             "even size of 2 or more (feature_dim // 8)")
        self.hop = self.n_fft // 2
        bins = self.n_fft // 2 + 1
        width = self.n_fft // 160
        self.band_widths = (width,) * (NUM_BANDS - 1) + (bins - width * (NUM_BANDS - 1),)
        self.BN = nn.ModuleList(
            nn.Sequential(RMSNorm(2 * b + 1), nn.Conv1d(2 * b + 1, feature_dim, 1))
            for b in self.band_widths)
        self.net = nn.Sequential(*(_BandSequenceBlock(feature_dim) for _ in range(layer)))
        self.output = nn.ModuleList(
            nn.Sequential(RMSNorm(feature_dim), nn.Conv1d(feature_dim, 4 * b, 1), nn.GLU(dim=1))
            for b in self.band_widths)

    def _window(self, like: Tensor) -> Tensor:
        return torch.hann_window(self.n_fft, device=like.device, dtype=like.dtype)

    def _encode(self, audio: Tensor) -> Tensor:
        """(n, time) -> band features (n, K, D, T)."""
        spec = torch.stft(audio, self.n_fft, self.hop, window=self._window(audio),
                          return_complex=True)
        eps = torch.finfo(torch.float32).eps
        features = []
        for band, head in zip(spec.split(self.band_widths, dim=1), self.BN):
            power = (band.abs().square().sum(dim=1, keepdim=True) + eps).sqrt()  # (n, 1, T)
            stacked = torch.cat([band.real / power, band.imag / power, power.log()], dim=1)
            norm, conv = head
            features.append(_pointwise(norm(stacked), conv))
        return torch.stack(features, dim=1)

    def _decode(self, features: Tensor, length: int) -> Tensor:
        """Band features (n, K, D, T) -> audio (n, length)."""
        bands = []
        for index, (width, head) in enumerate(zip(self.band_widths, self.output)):
            norm, conv, _ = head
            planes = _pointwise(norm(features[:, index]), conv)            # (n, 4b, T)
            value, gate = planes.chunk(2, dim=1)
            parts = (value * torch.sigmoid(gate)).unflatten(1, (2, width))  # (n, 2, b, T)
            bands.append(torch.complex(parts[:, 0], parts[:, 1]))
        spec = torch.cat(bands, dim=1)
        return torch.istft(spec, self.n_fft, self.hop, window=self._window(features),
                           length=length)

    def forward(self, mix: Tensor) -> Tensor:
        batch, channels, length = mix.shape
        features = self.net(self._encode(mix.reshape(batch * channels, length)))
        return self._decode(features, length).view(batch, 1, channels, length)
