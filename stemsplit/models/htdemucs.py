"""Hybrid Transformer Demucs (HTDemucs, Rouard et al. 2023), inference only.

Two U-Nets run side by side on a mixture:

* the *spectrogram branch* works on the STFT of the mixture (complex values as
  channels, "CaC"), with convolutions that shrink the frequency axis;
* the *waveform branch* works on the samples, with strided 1-d convolutions.

At the bottom, both are (optionally) widened to ``bottom_channels`` and meet in a
:class:`~stemsplit.models.transformer.CrossTransformerEncoder`; the two decoders then
grow them back, and the outputs (one per source) are summed after an inverse STFT of
the spectrogram branch.

The constructor takes the arguments stored in the published checkpoints (``args`` /
``kwargs``) and builds modules with the same names and shapes, so their
``state_dict`` loads with ``strict=True``. Training-only arguments are accepted and
ignored.

Shapes: ``B`` batch, ``S`` sources, ``C`` audio channels, ``T`` samples, ``Fr``
frequency bins, ``N`` STFT frames.
"""

from __future__ import annotations

import math
import typing as tp
from fractions import Fraction

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError
from .layers import HDecLayer, HEncLayer, MultiWrap, ScaledEmbedding, ispectro, pad1d, spectro
from .transformer import CrossTransformerEncoder
from .wiener import phase_estimate, wiener_filter

__all__ = ["HTDemucs", "WIENER_FRAMES"]

#: STFT frames per call of the Wiener filter (``cac=False`` models), as in demucs.
WIENER_FRAMES = 300


class HTDemucs(nn.Module):
    """Hybrid Transformer Demucs.

    Attributes used by the rest of stemsplit:
        sources: names of the separated stems, in output order.
        samplerate: expected sample rate of the input.
        audio_channels: expected number of audio channels of the input.
        segment: training segment length in seconds (a ``Fraction``); inputs are
            zero-padded to ``int(segment * samplerate)`` samples when
            ``use_train_segment`` is true. May be lowered (never raised) by a caller.
        use_train_segment: pad every input to the training length.

    Submodules (checkpoint names): ``encoder`` / ``decoder`` (spectrogram branch),
    ``tencoder`` / ``tdecoder`` (waveform branch), ``freq_emb`` (frequency embedding,
    optional), ``channel_upsampler[_t]`` / ``channel_downsampler[_t]`` (1x1 convs
    around the transformer when ``bottom_channels``), ``crosstransformer`` (None
    without transformer layers).
    """

    def __init__(
        self,
        sources: tp.Sequence[str],
        # Channels
        audio_channels: int = 2,
        channels: int = 48,
        channels_time: tp.Optional[int] = None,
        growth: float = 2,
        # STFT
        nfft: int = 4096,
        wiener_iters: int = 0,
        end_iters: int = 0,
        wiener_residual: bool = False,
        cac: bool = True,
        # Main structure
        depth: int = 4,
        rewrite: bool = True,
        # Frequency branch
        multi_freqs: tp.Optional[tp.Sequence[float]] = None,
        multi_freqs_depth: int = 3,
        freq_emb: float = 0.2,
        emb_scale: float = 10,
        emb_smooth: bool = True,
        # Convolutions
        kernel_size: int = 8,
        time_stride: int = 2,
        stride: int = 4,
        context: int = 1,
        context_enc: int = 0,
        # Normalization
        norm_starts: int = 4,
        norm_groups: int = 4,
        # DConv residual branch
        dconv_mode: int = 1,
        dconv_depth: int = 2,
        dconv_comp: float = 8,
        dconv_init: float = 1e-3,
        # Before the transformer
        bottom_channels: int = 0,
        # Transformer
        t_layers: int = 5,
        t_emb: str = "sin",
        t_hidden_scale: float = 4.0,
        t_heads: int = 8,
        t_dropout: float = 0.0,
        t_max_positions: int = 10000,
        t_norm_in: bool = True,
        t_norm_in_group: bool = False,
        t_group_norm: bool = False,
        t_norm_first: bool = True,
        t_norm_out: bool = True,
        t_max_period: float = 10000.0,
        t_weight_decay: float = 0.0,
        t_lr: tp.Optional[float] = None,
        t_layer_scale: bool = True,
        t_gelu: bool = True,
        t_weight_pos_embed: float = 1.0,
        t_sin_random_shift: int = 0,
        t_cape_mean_normalize: bool = True,
        t_cape_augment: bool = True,
        t_cape_glob_loc_scale: tp.Sequence[float] = (5000.0, 1.0, 1.4),
        t_sparse_self_attn: bool = False,
        t_sparse_cross_attn: bool = False,
        t_mask_type: str = "diag",
        t_mask_random_seed: int = 42,
        t_sparse_attn_window: int = 500,
        t_global_window: int = 100,
        t_sparsity: float = 0.95,
        t_auto_sparsity: bool = False,
        t_cross_first: bool = False,
        # Weight init (training only)
        rescale: float = 0.1,
        # Metadata
        samplerate: int = 44100,
        segment: tp.Union[Fraction, float] = 10,
        use_train_segment: bool = True,
    ) -> None:
        super().__init__()
        if nfft % 4:
            raise ModelError(f"HTDemucs needs an FFT size divisible by 4, got {nfft}")
        self.sources = list(sources)
        self.audio_channels = audio_channels
        self.samplerate = samplerate
        self.segment = segment
        self.use_train_segment = use_train_segment
        self.compute_dtype = torch.float32
        """What the two branches compute in (``set_compute_dtype``)."""
        self.cac = cac
        self.wiener_iters = wiener_iters
        self.wiener_residual = wiener_residual
        self.nfft = nfft
        self.hop_length = nfft // 4
        self.depth = depth
        self.bottom_channels = bottom_channels
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.context = context

        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.tencoder = nn.ModuleList()
        self.tdecoder = nn.ModuleList()
        self.freq_emb: tp.Optional[ScaledEmbedding] = None
        self.freq_emb_scale = freq_emb

        # Input channels of the time (chin) and spectrogram (chin_z) branches, and
        # output channels of the current layer of each (chout, chout_z).
        chin = audio_channels
        chin_z = chin * 2 if cac else chin
        chout = channels_time or channels
        chout_z = channels
        freqs = nfft // 2
        dconv_kw = {"depth": dconv_depth, "compress": dconv_comp, "init": dconv_init, "gelu": True}

        for index in range(depth):
            is_freq = freqs > 1  # the spectrogram still has a frequency axis
            ker, stri, pad = kernel_size, stride, True
            if not is_freq:
                ker, stri = time_stride * 2, time_stride
            last_freq = is_freq and freqs <= kernel_size
            if last_freq:  # this layer folds the remaining frequencies in one go
                ker, pad = freqs, False
                chout_z = max(chout, chout_z)
                chout = chout_z

            common = dict(
                stride=stri,
                norm=index >= norm_starts,
                rewrite=rewrite,
                norm_groups=norm_groups,
                dconv_kw=dconv_kw,
            )
            spec_kw = dict(common, kernel_size=ker, freq=is_freq, pad=pad)
            time_kw = dict(common, kernel_size=kernel_size, stride=stride, freq=False, pad=True)
            multi = bool(multi_freqs) and index < multi_freqs_depth

            enc: nn.Module = HEncLayer(
                chin_z, chout_z, dconv=dconv_mode & 1, context=context_enc, **spec_kw
            )
            if multi:
                enc = MultiWrap(enc, multi_freqs)
            self.encoder.append(enc)
            if is_freq:
                self.tencoder.append(
                    HEncLayer(
                        chin,
                        chout,
                        dconv=dconv_mode & 1,
                        context=context_enc,
                        empty=last_freq,
                        **time_kw,
                    )
                )

            if index == 0:
                # The decoders output one signal per source.
                chin = audio_channels * len(self.sources)
                chin_z = chin * 2 if cac else chin
            dec_kw = dict(spec_kw, context_freq=False) if multi else spec_kw
            dec: nn.Module = HDecLayer(
                chout_z, chin_z, dconv=dconv_mode & 2, last=index == 0, context=context, **dec_kw
            )
            if multi:
                dec = MultiWrap(dec, multi_freqs)
            self.decoder.insert(0, dec)
            if is_freq:
                self.tdecoder.insert(
                    0,
                    HDecLayer(
                        chout,
                        chin,
                        dconv=dconv_mode & 2,
                        empty=last_freq,
                        last=index == 0,
                        context=context,
                        **time_kw,
                    ),
                )

            chin, chin_z = chout, chout_z
            chout, chout_z = int(growth * chout), int(growth * chout_z)
            if is_freq:
                freqs = 1 if freqs <= kernel_size else freqs // stride
            if index == 0 and freq_emb:
                self.freq_emb = ScaledEmbedding(freqs, chin_z, smooth=emb_smooth, scale=emb_scale)

        transformer_channels = channels * growth ** (depth - 1)
        if bottom_channels:
            self.channel_upsampler = nn.Conv1d(transformer_channels, bottom_channels, 1)
            self.channel_downsampler = nn.Conv1d(bottom_channels, transformer_channels, 1)
            self.channel_upsampler_t = nn.Conv1d(transformer_channels, bottom_channels, 1)
            self.channel_downsampler_t = nn.Conv1d(bottom_channels, transformer_channels, 1)
            transformer_channels = bottom_channels

        self.crosstransformer: tp.Optional[CrossTransformerEncoder] = None
        if t_layers > 0:
            self.crosstransformer = CrossTransformerEncoder(
                dim=transformer_channels,
                emb=t_emb,
                hidden_scale=t_hidden_scale,
                num_heads=t_heads,
                num_layers=t_layers,
                cross_first=t_cross_first,
                dropout=t_dropout,
                max_positions=t_max_positions,
                norm_in=t_norm_in,
                norm_in_group=t_norm_in_group,
                group_norm=t_group_norm,
                norm_first=t_norm_first,
                norm_out=t_norm_out,
                max_period=t_max_period,
                layer_scale=t_layer_scale,
                gelu=t_gelu,
                sin_random_shift=t_sin_random_shift,
                weight_pos_embed=t_weight_pos_embed,
                cape_mean_normalize=t_cape_mean_normalize,
                sparse_self_attn=t_sparse_self_attn,
                sparse_cross_attn=t_sparse_cross_attn,
            )

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Run both branches (encoders, decoders, the cross transformer) in ``dtype``
        (bfloat16 or float16), for ``--precision``: every weight converted once, here. The
        STFT, the standardisation, its undoing, the masks and the inverse STFT stay in
        float32: the standardised inputs go in as ``dtype`` and the branches' outputs come
        back as float32. The norms and softmax take ``dtype`` and accumulate in float32
        (PyTorch's CPU and CUDA kernels do so for 16-bit inputs). Load the weights first."""
        self.to(dtype)
        self.compute_dtype = dtype

    # ----------------------------------------------------------------------------------
    # Lengths
    # ----------------------------------------------------------------------------------

    def _training_length(self) -> int:
        return int(self.segment * self.samplerate)

    def valid_length(self, length: int) -> int:
        """Length the model actually processes for an input of ``length`` samples.

        With ``use_train_segment`` (the published models), this is always the training
        length ``int(segment * samplerate)``; a longer input is an error.
        """
        if not self.use_train_segment:
            return length
        training_length = self._training_length()
        if length > training_length:
            raise ValueError(
                f"input of {length} samples is longer than the training length "
                f"{training_length}"
            )
        return training_length

    # ----------------------------------------------------------------------------------
    # Spectrogram helpers
    # ----------------------------------------------------------------------------------

    def _spec(self, x: torch.Tensor) -> torch.Tensor:
        """STFT aligned with the strided convolutions.

        Args:
            x: ``(B, C, T)``.

        Returns:
            complex ``(B, C, nfft/2, ceil(T / hop))``: the Nyquist bin is dropped, and
            reflect padding of 1.5 hop on each side plus the removal of 2 frames at
            each end make frame ``i`` cover samples around ``i * hop``.
        """
        hop = self.hop_length
        frames = math.ceil(x.shape[-1] / hop)
        pad = hop // 2 * 3
        x = pad1d(x, (pad, pad + frames * hop - x.shape[-1]), mode="reflect")
        z = spectro(x, self.nfft, hop)
        return z[..., :-1, 2 : 2 + frames]

    def _ispec(self, z: torch.Tensor, length: int, padded: bool = False) -> torch.Tensor:
        """Inverse of :meth:`_spec`.

        Args:
            z: complex ``(..., nfft/2, N)``, or with ``padded`` already extended to
                ``(..., nfft/2 + 1, N + 4)`` by :meth:`_pad_spectrogram`.
            length: samples wanted.

        Returns:
            real ``(..., length)``.
        """
        hop = self.hop_length
        if not padded:
            z = self._pad_spectrogram(z)
        pad = hop // 2 * 3
        padded_length = hop * math.ceil(length / hop) + 2 * pad
        x = ispectro(z, hop, length=padded_length)
        return x[..., pad : pad + length]

    @staticmethod
    def _pad_spectrogram(z: torch.Tensor) -> torch.Tensor:
        """``(..., Fr, N)`` -> ``(..., Fr + 1, N + 4)``: a zero Nyquist bin and two
        zero frames on each side, undoing the cropping of :meth:`_spec`."""
        return F.pad(z, (2, 2, 0, 1))

    def _padded_source_spectrograms(self, z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """:meth:`_mask` followed by :meth:`_pad_spectrogram`.

        With ``cac`` the real network output is written straight into the padded
        complex buffer (one copy instead of two), laid out frame-major: the inverse FFT
        runs along frequency, so ``torch.istft`` then needs no transposing copy of its own.

        Args:
            z: complex mixture STFT ``(B, C, Fr, N)``.
            m: real network output ``(B, S, C', Fr, N)``.

        Returns:
            complex ``(B, S, C, Fr + 1, N + 4)`` (a transposed view with ``cac``).
        """
        if not self.cac:
            return self._pad_spectrogram(self._mask(z, m))
        batch, sources, channels2, freqs, frames = m.shape
        out = torch.zeros(
            (batch, sources, channels2 // 2, frames + 4, freqs + 1),
            dtype=torch.complex128 if m.dtype == torch.float64 else torch.complex64,
            device=m.device,
        )
        parts = m.view(batch, sources, channels2 // 2, 2, freqs, frames)
        torch.view_as_real(out)[..., 2 : 2 + frames, :freqs, :] = parts.permute(0, 1, 2, 5, 4, 3)
        return out.transpose(-1, -2)

    def _magnitude(self, z: torch.Tensor) -> torch.Tensor:
        """Network input from the mixture STFT.

        Args:
            z: complex ``(B, C, Fr, N)``.

        Returns:
            with ``cac``: real ``(B, 2C, Fr, N)``, channel ``2c`` the real part and
            ``2c + 1`` the imaginary part of audio channel ``c``; otherwise ``|z|``.
        """
        if not self.cac:
            return z.abs()
        batch, channels, freqs, frames = z.shape
        parts = torch.view_as_real(z).permute(0, 1, 4, 2, 3)
        return parts.reshape(batch, channels * 2, freqs, frames)

    def _mask(self, z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Source spectrograms from the network output.

        Args:
            z: complex mixture STFT ``(B, C, Fr, N)`` (unused with ``cac``).
            m: real ``(B, S, C', Fr, N)``: with ``cac``, the complex spectrograms as
                channels (``C' = 2C``); otherwise magnitudes (``C' = C``).

        Returns:
            complex ``(B, S, C, Fr, N)``.
        """
        if self.cac:
            batch, sources, channels2, freqs, frames = m.shape
            parts = m.view(batch, sources, channels2 // 2, 2, freqs, frames)
            return torch.view_as_complex(parts.permute(0, 1, 2, 4, 5, 3).contiguous())
        if self.wiener_iters < 0:
            mix = z[:, None]
            return mix / (1e-8 + mix.abs()) * m
        if self.wiener_iters == 0:
            return phase_estimate(m, z)
        return self._wiener(m, z)

    def _wiener(self, magnitudes: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """Multichannel Wiener filtering (``cac=False`` models with ``wiener_iters > 0``),
        per batch item and per excerpt of :data:`WIENER_FRAMES` frames.

        Args:
            magnitudes: real ``(B, S, C, Fr, N)``.
            mix: complex ``(B, C, Fr, N)``.

        Returns:
            complex ``(B, S, C, Fr, N)``.
        """
        batch, sources, channels, freqs, frames = magnitudes.shape
        mags = magnitudes.permute(0, 4, 3, 2, 1)  # (B, N, Fr, C, S)
        mixes = mix.permute(0, 3, 2, 1)  # (B, N, Fr, C)
        out = torch.empty(
            (batch, frames, freqs, channels, sources), dtype=mix.dtype, device=mix.device
        )
        for item in range(batch):
            for start in range(0, frames, WIENER_FRAMES):
                span = slice(start, start + WIENER_FRAMES)
                filtered = wiener_filter(
                    mags[item, span], mixes[item, span], self.wiener_iters,
                    residual=self.wiener_residual,
                )
                out[item, span] = filtered[..., :sources]  # drop the residual source
        return out.permute(0, 4, 3, 2, 1)

    # ----------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate ``mix``.

        Args:
            mix: float ``(B, C, T)``; with ``use_train_segment``, ``T`` must not exceed
                the training length and shorter inputs are zero-padded to it.

        Returns:
            ``(B, S, C, T)``.
        """
        length = mix.shape[-1]
        if self.use_train_segment:
            padded_length = self.valid_length(length)
            if padded_length > length:
                mix = F.pad(mix, (0, padded_length - length))
        else:
            padded_length = length

        z = self._spec(mix)
        x = self._magnitude(z)
        batch, _, freqs, frames = x.shape

        # Both branches see standardised inputs (per batch item).
        std, mean = torch.std_mean(x, dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        std_t, mean_t = torch.std_mean(mix, dim=(1, 2), keepdim=True)
        xt = (mix - mean_t) / (1e-5 + std_t)
        x, xt = x.to(self.compute_dtype), xt.to(self.compute_dtype)

        skips: tp.List[torch.Tensor] = []  # spectrogram branch
        skips_t: tp.List[torch.Tensor] = []  # waveform branch
        lengths: tp.List[int] = []
        lengths_t: tp.List[int] = []
        for idx, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                tencode = self.tencoder[idx]
                xt = tencode(xt)
                if tencode.empty:
                    # The waveform branch now has the spectrogram's shape: merge.
                    inject = xt
                else:
                    skips_t.append(xt)
            x = encode(x, inject)
            if idx == 0 and self.freq_emb is not None:
                # Frequency embedding, so convolutions along frequency are not
                # translation invariant: (Fr', ch) -> (ch, Fr', 1).
                bins = torch.arange(x.shape[-2], device=x.device)
                emb = self.freq_emb(bins).t()[:, :, None]
                x = x + self.freq_emb_scale * emb
            skips.append(x)

        if self.crosstransformer is not None:
            x, xt = self._bottleneck(x, xt)

        offset = self.depth - len(self.tdecoder)
        for idx, decode in enumerate(self.decoder):
            x, pre = decode(x, skips.pop(), lengths.pop())
            if idx >= offset:
                tdecode = self.tdecoder[idx - offset]
                length_t = lengths_t.pop()
                if tdecode.empty:
                    # Branches separate: the time decoder starts from the input of
                    # the last spectrogram transposed conv, which has one frequency.
                    xt, _ = tdecode(pre[:, :, 0], None, length_t)
                else:
                    xt, _ = tdecode(xt, skips_t.pop(), length_t)

        num_sources = len(self.sources)
        x, xt = x.float(), xt.float()
        x = x.view(batch, num_sources, -1, freqs, frames)
        x = torch.addcmul(mean[:, None], x, std[:, None])  # undo the standardisation
        x = self._ispec(self._padded_source_spectrograms(z, x), padded_length, padded=True)

        xt = xt.view(batch, num_sources, -1, padded_length)
        out = torch.addcmul(mean_t[:, None], xt, std_t[:, None]).add_(x)
        if padded_length > length:
            out = out[..., :length]
        return out

    def _bottleneck(
        self, x: torch.Tensor, xt: torch.Tensor
    ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Cross transformer between the branches, with the optional 1x1 convs.

        Args:
            x: ``(B, ch, Fr', N)``.
            xt: ``(B, ch, T')``.

        Returns:
            tensors of the same shapes.
        """
        assert self.crosstransformer is not None
        if self.bottom_channels:
            batch, _, freqs, frames = x.shape
            x = self.channel_upsampler(x.reshape(batch, -1, freqs * frames))
            x = x.view(batch, -1, freqs, frames)
            xt = self.channel_upsampler_t(xt)
        x, xt = self.crosstransformer(x, xt)
        if self.bottom_channels:
            batch, _, freqs, frames = x.shape
            x = self.channel_downsampler(x.reshape(batch, -1, freqs * frames))
            x = x.view(batch, -1, freqs, frames)
            xt = self.channel_downsampler_t(xt)
        return x, xt
