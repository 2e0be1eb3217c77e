"""Hybrid Demucs (v3) network, inference only.

Equivalent to ``demucs.hdemucs.HDemucs`` from demucs 4.1.0.  A frequency
branch (a U-Net over the STFT, convolving along frequencies) and, for hybrid
models, a time branch (a U-Net over the waveform) run side by side; once the
frequency axis is reduced to a single bin the two branches merge and share the
innermost layers.  The frequency output is a complex spectrogram per source
(``cac=True``) or a magnitude turned into one (mixture phase, Wiener filter or
mask); it is inverted and added to the time branch output.
"""

from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .layers import HDecLayer, HEncLayer, MultiWrap, ScaledEmbedding, ispectro, pad1d, spectro
from .wiener import phase_estimate, wiener_filter

__all__ = ["HDemucs"]

#: Frames per excerpt of the Wiener filter (the EM statistics are per excerpt).
WIENER_FRAMES = 300


class HDemucs(nn.Module):
    """Spectrogram / hybrid Demucs.  Arguments are those of demucs' ``HDemucs``.

    Args:
        sources: names of the output sources.
        audio_channels: input / output audio channels.
        channels: hidden channels of the first layer (frequency branch).
        channels_time: hidden channels of the first time layer (default ``channels``).
        growth: channel multiplier per layer.
        nfft: STFT size; the hop is ``nfft // 4``.
        wiener_iters: ``cac=False`` only: Wiener EM iterations (0: mixture phase,
            negative: soft mask).
        end_iters: training-time ``wiener_iters`` (unused at inference).
        wiener_residual: add a residual source in the Wiener filter.
        cac: the frequency branch works on real/imaginary parts as channels.
        depth: number of encoder / decoder layers.
        rewrite: add the 1x1 convolutions + GLU in each layer.
        hybrid: add the time branch.
        hybrid_old: reproduce the padding of the MDX 2021 hybrid models.
        multi_freqs: frequency split ratios for ``MultiWrap`` on the outer layers.
        multi_freqs_depth: how many outer layers are wrapped.
        freq_emb: weight of the frequency embedding added after the first layer (0: none).
        emb_scale, emb_smooth: frequency embedding options.
        kernel_size, stride: of the encoder / decoder convolutions.
        time_stride: stride of the time layers after the merge.
        context, context_enc: context of the decoder / encoder rewrite convolutions.
        norm_starts, norm_groups: GroupNorm from this layer on, with these groups.
        dconv_mode, dconv_depth, dconv_comp, dconv_attn, dconv_lstm, dconv_init:
            DConv residual branch options.
        rescale: training-time initialisation only (ignored).
        samplerate: sample rate in Hz.
        segment: duration in seconds of the chunks to process.
    """

    def __init__(self,
                 sources: tp.List[str],
                 audio_channels: int = 2,
                 channels: int = 48,
                 channels_time: tp.Optional[int] = None,
                 growth: float = 2,
                 nfft: int = 4096,
                 wiener_iters: int = 0,
                 end_iters: int = 0,
                 wiener_residual: bool = False,
                 cac: bool = True,
                 depth: int = 6,
                 rewrite: bool = True,
                 hybrid: bool = True,
                 hybrid_old: bool = False,
                 multi_freqs: tp.Optional[tp.Sequence[float]] = None,
                 multi_freqs_depth: int = 2,
                 freq_emb: float = 0.2,
                 emb_scale: float = 10,
                 emb_smooth: bool = True,
                 kernel_size: int = 8,
                 time_stride: int = 2,
                 stride: int = 4,
                 context: int = 1,
                 context_enc: int = 0,
                 norm_starts: int = 4,
                 norm_groups: int = 4,
                 dconv_mode: int = 1,
                 dconv_depth: int = 2,
                 dconv_comp: float = 4,
                 dconv_attn: int = 4,
                 dconv_lstm: int = 4,
                 dconv_init: float = 1e-4,
                 rescale: float = 0.1,
                 samplerate: int = 44100,
                 segment: float = 4 * 10) -> None:
        super().__init__()
        if hybrid_old and not hybrid:
            raise ValueError("hybrid_old must come with hybrid=True")
        self.cac = cac
        self.wiener_residual = wiener_residual
        self.audio_channels = audio_channels
        self.sources = sources
        self.kernel_size = kernel_size
        self.context = context
        self.stride = stride
        self.depth = depth
        self.channels = channels
        self.samplerate = samplerate
        self.segment = segment
        self.nfft = nfft
        self.hop_length = nfft // 4
        self.wiener_iters = wiener_iters
        self.end_iters = end_iters
        self.hybrid = hybrid
        self.hybrid_old = hybrid_old
        self.freq_emb: tp.Optional[ScaledEmbedding] = None

        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        if hybrid:
            self.tencoder = nn.ModuleList()
            self.tdecoder = nn.ModuleList()

        # channels entering the current layer: time branch, frequency branch
        chin = audio_channels
        chin_z = chin * 2 if cac else chin
        chout = channels_time or channels
        chout_z = channels
        freqs = nfft // 2

        for index in range(depth):
            freq = freqs > 1
            ker, stri = kernel_size, stride
            if not freq:
                ker, stri = time_stride * 2, time_stride
            pad = True
            last_freq = False  # this layer reduces the remaining bins to one
            if freq and freqs <= kernel_size:
                ker, pad, last_freq = freqs, False, True
            if last_freq:
                chout_z = max(chout, chout_z)
                chout = chout_z

            common = dict(
                norm=index >= norm_starts,
                rewrite=rewrite,
                norm_groups=norm_groups,
                dconv_kw=dict(lstm=index >= dconv_lstm, attn=index >= dconv_attn,
                              depth=dconv_depth, compress=dconv_comp, init=dconv_init,
                              gelu=True),
            )
            freq_kw = dict(common, kernel_size=ker, stride=stri, freq=freq, pad=pad)
            time_kw = dict(common, kernel_size=kernel_size, stride=stride, freq=False, pad=True)
            multi = bool(multi_freqs) and index < multi_freqs_depth

            enc: nn.Module = HEncLayer(chin_z, chout_z, dconv=dconv_mode & 1,
                                       context=context_enc, **freq_kw)
            if multi:
                enc = MultiWrap(enc, multi_freqs)
            self.encoder.append(enc)
            if hybrid and freq:
                self.tencoder.append(HEncLayer(chin, chout, dconv=dconv_mode & 1,
                                               context=context_enc, empty=last_freq, **time_kw))

            if index == 0:
                chin = audio_channels * len(sources)
                chin_z = chin * 2 if cac else chin
            dec: nn.Module = HDecLayer(chout_z, chin_z, dconv=dconv_mode & 2, last=index == 0,
                                       context=context, context_freq=not multi, **freq_kw)
            if multi:
                dec = MultiWrap(dec, multi_freqs)
            self.decoder.insert(0, dec)
            if hybrid and freq:
                self.tdecoder.insert(0, HDecLayer(chout, chin, dconv=dconv_mode & 2,
                                                  empty=last_freq, last=index == 0,
                                                  context=context, **time_kw))

            chin, chin_z = chout, chout_z
            chout, chout_z = int(growth * chout), int(growth * chout_z)
            if freq:
                freqs = 1 if freqs <= kernel_size else freqs // stride
            if index == 0 and freq_emb:
                self.freq_emb = ScaledEmbedding(freqs, chin_z, smooth=emb_smooth,
                                                scale=emb_scale)
                self.freq_emb_scale = freq_emb

    def valid_length(self, length: int) -> int:
        """Any length works: returned unchanged (demucs' HDemucs has no valid_length)."""
        return length

    # ------------------------------------------------------------------
    # STFT helpers
    # ------------------------------------------------------------------

    def _spec(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> complex ``(B, C, nfft // 2, frames)``.

        Hybrid models get exactly ``ceil(T / hop)`` frames, aligned with the
        time branch (reflect padding by ``3 hop / 2`` plus the rounding).
        """
        hop = self.hop_length
        if not self.hybrid:
            return spectro(x, self.nfft, hop)[..., :-1, :]
        frames = math.ceil(x.shape[-1] / hop)
        pad = hop // 2 * 3
        mode = "constant" if self.hybrid_old else "reflect"
        x = pad1d(x, (pad, pad + frames * hop - x.shape[-1]), mode=mode)
        z = spectro(x, self.nfft, hop)
        return z[..., :-1, 2:2 + frames]

    def _pad_spec(self, z: torch.Tensor) -> torch.Tensor:
        """Restore the Nyquist bin (zero) and, for hybrid models, 2 frames on each side.

        complex ``(..., nfft // 2, frames)`` -> ``(..., nfft // 2 + 1, frames [+ 4])``.
        """
        z = F.pad(z, (0, 0, 0, 1))
        if self.hybrid:
            z = F.pad(z, (2, 2))
        return z

    def _istft(self, padded: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse STFT of a :meth:`_pad_spec`-padded spectrogram -> real ``(..., length)``."""
        hop = self.hop_length
        if not self.hybrid:
            return ispectro(padded, hop, length)
        pad = hop // 2 * 3
        rounded = hop * math.ceil(length / hop)
        if self.hybrid_old:
            return ispectro(padded, hop, length=rounded)[..., :length]
        return ispectro(padded, hop, length=rounded + 2 * pad)[..., pad:pad + length]

    def _ispec(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """Complex ``(..., nfft // 2, frames)`` -> real ``(..., length)``."""
        return self._istft(self._pad_spec(z), length)

    def _magnitude(self, z: torch.Tensor) -> torch.Tensor:
        """Frequency branch input from the complex STFT ``(B, C, Fr, T)``.

        ``cac``: real ``(B, 2C, Fr, T)`` with channels ``[re0, im0, re1, im1, ...]``;
        otherwise the magnitude ``(B, C, Fr, T)``.
        """
        if not self.cac:
            return z.abs()
        batch, channels, freqs, frames = z.shape
        return torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(
            batch, channels * 2, freqs, frames)

    def _cac_padded_spec(self, m: torch.Tensor) -> torch.Tensor:
        """``cac`` output ``(B, S, 2C, Fr, T)`` -> ``_pad_spec(_mask(z, m))`` in one copy."""
        batch, sources, channels, freqs, frames = m.shape
        side = 2 if self.hybrid else 0
        out = torch.zeros((batch, sources, channels // 2, freqs + 1, frames + 2 * side),
                          dtype=torch.complex64 if m.dtype == torch.float32 else torch.complex128,
                          device=m.device)
        pairs = m.view(batch, sources, channels // 2, 2, freqs, frames).permute(0, 1, 2, 4, 5, 3)
        torch.view_as_real(out)[..., :freqs, side:side + frames, :] = pairs
        return out

    def _mask(self, z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Complex source spectrograms ``(B, S, C, Fr, T)`` from the branch output.

        Args:
            z: complex mixture STFT ``(B, C, Fr, T)`` (unused with ``cac``).
            m: real ``(B, S, C', Fr, T)``, ``C' = 2C`` with ``cac``.
        """
        if self.cac:
            batch, sources, channels, freqs, frames = m.shape
            pairs = m.view(batch, sources, channels // 2, 2, freqs, frames)
            return torch.view_as_complex(pairs.permute(0, 1, 2, 4, 5, 3).contiguous())
        if self.wiener_iters < 0:
            mix = z[:, None]
            return mix / (1e-8 + mix.abs()) * m
        if self.wiener_iters == 0:
            return phase_estimate(m, z)
        return self._wiener(m, z)

    def _wiener(self, magnitudes: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """Wiener filtering per item and per excerpt of ``WIENER_FRAMES`` frames.

        Args:
            magnitudes: real ``(B, S, C, Fr, T)``.
            mix: complex ``(B, C, Fr, T)``.

        Returns:
            complex ``(B, S, C, Fr, T)``.
        """
        batch, sources, channels, freqs, frames = magnitudes.shape
        mags = magnitudes.permute(0, 4, 3, 2, 1)  # (B, T, Fr, C, S)
        mixes = mix.permute(0, 3, 2, 1)  # (B, T, Fr, C)
        out = torch.empty((batch, frames, freqs, channels, sources), dtype=mix.dtype,
                          device=mix.device)
        for item in range(batch):
            for start in range(0, frames, WIENER_FRAMES):
                span = slice(start, start + WIENER_FRAMES)
                filtered = wiener_filter(mags[item, span], mixes[item, span],
                                         self.wiener_iters, residual=self.wiener_residual)
                out[item, span] = filtered[..., :sources]
        return out.permute(0, 4, 3, 2, 1)

    # ------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate ``mix`` ``(B, audio_channels, T)`` into ``(B, sources, audio_channels, T)``."""
        length = mix.shape[-1]
        z = self._spec(mix)
        x = self._magnitude(z).to(mix.device)
        batch, _, freqs, frames = x.shape

        # the frequency branch is always normalised
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)

        if self.hybrid:
            mean_t = mix.mean(dim=(1, 2), keepdim=True)
            std_t = mix.std(dim=(1, 2), keepdim=True)
            xt = (mix - mean_t) / (1e-5 + std_t)

        skips: tp.List[torch.Tensor] = []
        skips_t: tp.List[torch.Tensor] = []
        lengths: tp.List[int] = []
        lengths_t: tp.List[int] = []
        n_time = len(self.tencoder) if self.hybrid else 0
        for index, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if index < n_time:
                lengths_t.append(xt.shape[-1])
                tenc = self.tencoder[index]
                xt = tenc(xt)
                if tenc.empty:
                    inject = xt  # the branches merge here
                else:
                    skips_t.append(xt)
            x = encode(x, inject)
            if index == 0 and self.freq_emb is not None:
                bins = torch.arange(x.shape[-2], device=x.device)
                emb = self.freq_emb(bins).t()[None, :, :, None]  # (1, C, Fr, 1)
                x = x + self.freq_emb_scale * emb
            skips.append(x)

        x = torch.zeros_like(x)
        if self.hybrid:
            xt = torch.zeros_like(x)
        offset = self.depth - n_time  # decoder index of the first time layer
        for index, decode in enumerate(self.decoder):
            x, pre = decode(x, skips.pop(), lengths.pop())
            # `pre` entered the last transposed conv: where the branches split
            if self.hybrid and index >= offset:
                tdec = self.tdecoder[index - offset]
                length_t = lengths_t.pop()
                if tdec.empty:
                    xt, _ = tdec(pre[:, :, 0], None, length_t)
                else:
                    xt, _ = tdec(xt, skips_t.pop(), length_t)

        n_sources = len(self.sources)
        x = x.view(batch, n_sources, -1, freqs, frames)
        x = x * std[:, None] + mean[:, None]
        device = x.device
        if device.type in ("mps", "xpu"):  # no complex support there
            x = x.cpu()
        if self.cac:
            padded = self._cac_padded_spec(x)
        else:
            padded = self._pad_spec(self._mask(z, x))
        out = self._istft(padded, length).to(device)
        if self.hybrid:
            xt = xt.view(batch, n_sources, -1, length)
            out = out + (xt * std_t[:, None] + mean_t[:, None])
        return out
