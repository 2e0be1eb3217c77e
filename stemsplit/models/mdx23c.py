"""MDX23C: KUIELab's TFC-TDF v3 U-Net (``TFC_TDF_net``) as ZFTurbo's Music-Source-Separation-
Training defines it (``models/mdx23c_tfc_tdf_v3.py``; audio-separator 0.47.1 carries the same
network). The state dict has exactly the keys and shapes of ZFTurbo's class, so published
``.ckpt`` files (MDX23C-8KFFT-InstVoc_HQ.ckpt and kin) load with ``strict=True``.

The maths, in ZFTurbo's layout (b batch, c audio channels, K sub-bands, T STFT frames):

* STFT of every channel (periodic Hann window of ``n_fft``, centred, reflection padding), bins
  [0, dim_f): real and imaginary planes side by side, (b, 2c, dim_f, T), plane 2*ch + (0 real,
  1 imaginary); then "cac2cws": the frequency axis is cut into K sub-bands that become
  channels, (b, 2cK, dim_f / K, T), channel plane * K + sub-band.
* ``first_conv`` (1x1) to ``num_channels``; time and frequency swap places (b, C, T, F).
* Encoder: per scale a TFC-TDF stack (``num_blocks_per_scale`` blocks of
  norm-act-conv3x3, + a time-distributed norm-act-Linear(F, F/bn)-norm-act-Linear(F/bn, F)
  residual, norm-act-conv3x3, + a 1x1 shortcut of the block input), then a strided
  norm-act-conv ("downscale", kernel = stride = ``scale``, C -> C + growth). Then a
  bottleneck stack; the decoder mirrors it (norm-act-transposed conv, concatenation with the
  encoder output of the same scale, a TFC-TDF stack from 2C to C).
* The decoder output times ``first_conv``'s output, concatenated after the sub-band
  spectrogram, through 1x1 conv - act - 1x1 conv to ``num_target_instruments`` x 2cK planes;
  sub-bands back to frequencies, zeros above dim_f, iSTFT (same window): (b, targets, c,
  hop * (time // hop)).

How we compute it (the same sums up to float reassociation), in ZFTurbo's NCHW layout:

* The 3x3 and the strided convolutions are oneDNN's NCHW kernels, as in ZFTurbo's code. (Its
  channels-last kernel is faster but accumulates less accurately: on the InstVoc HQ network
  it put the output 1.4e-5 of the peak away from float64, where ZFTurbo's code is at 6e-6.)
* 1x1 convolutions are matrix products over the (C, T*F) planes; the shortcut is accumulated
  into the second 3x3 convolution's output and the TDF residual into the first's, in place,
  so neither needs a temporary or a separate addition; the final 1x1 convolution takes its
  two inputs separately instead of concatenating them.
* The transposed convolution (kernel = stride) is one matrix product whose result is written
  straight into the decoder's concatenation buffer (oneDNN's NCHW deconvolution is 3x
  slower).
* InstanceNorm2d (no running statistics) is group norm with one group per channel, which
  PyTorch computes faster; activations and eval-mode batch norm run in place whenever the
  input is not needed again. In-place updates only ever happen with gradients disabled (or
  when nothing requires a gradient, as after ``requires_grad_(False)``), so autograd and
  training mode compute exactly ZFTurbo's graph.

Model code never touches files, network or terminal.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MDX23C", "chunk_size_for"]


# --------------------------------------------------------------------------------------
# Chunk lengths


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"MDX23C: {name} must be an integer >= {minimum}, not {value!r}")
    return value


def chunk_size_for(segment_samples: int, hop_length: int, num_scales: int, scale_time: int) -> int:
    """The longest chunk of at most ``segment_samples`` samples that the network accepts.

    A chunk must be a multiple of ``hop_length`` (so the iSTFT gives exactly the chunk back)
    and its STFT frame count, ``1 + chunk // hop_length``, a multiple of
    ``scale_time ** num_scales`` (every downscale halves, or divides by ``scale_time``, the
    frames). ValueError if no positive chunk fits.
    """
    segment_samples = _positive_int("segment_samples", segment_samples)
    hop_length = _positive_int("hop_length", hop_length)
    num_scales = _positive_int("num_scales", num_scales, 0)
    scale_time = _positive_int("scale_time", scale_time)
    multiple = scale_time ** num_scales
    hops = segment_samples // hop_length          # the most hops a chunk can have
    hops = (hops + 1) // multiple * multiple - 1  # frames = hops + 1, a multiple of `multiple`
    if hops < 1:
        smallest = max(multiple - 1, 1) * hop_length
        raise ValueError(
            f"MDX23C: a segment of {segment_samples} samples is shorter than the smallest chunk "
            f"the network accepts ({smallest} samples: hop {hop_length}, frames a multiple of "
            f"{multiple})")
    return hops * hop_length


# --------------------------------------------------------------------------------------
# Building blocks (named and nested as in ZFTurbo's classes, so the state dict keys match)


class _Activation(nn.Module):
    """gelu, relu or elu<alpha> (ZFTurbo's ``get_act``), with an in-place variant."""

    def __init__(self, act: str) -> None:
        super().__init__()
        if not isinstance(act, str):
            raise ValueError(f"MDX23C: unknown act {act!r} (gelu, relu or elu<alpha>)")
        self.name = act
        self.alpha = 1.0
        if act == "gelu" or act == "relu":
            return
        if act[:3] != "elu":
            raise ValueError(f"MDX23C: unknown act {act!r} (gelu, relu or elu<alpha>)")
        try:
            self.alpha = float(act.replace("elu", ""))  # ZFTurbo's parsing: 'elu1.0' -> 1.0
        except ValueError:
            raise ValueError(f"MDX23C: act {act!r} needs a number after 'elu', e.g. 'elu1.0'") \
                from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "gelu":
            return F.gelu(x)
        if self.name == "relu":
            return F.relu(x)
        return F.elu(x, self.alpha)

    def inplace_(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "gelu":
            return torch.ops.aten.gelu_(x)
        if self.name == "relu":
            return torch.relu_(x)
        return F.elu(x, self.alpha, inplace=True)

    def extra_repr(self) -> str:
        return repr(self.name)


def _group_count(norm) -> int | None:
    """The group count of a 'GroupNorm<N>' norm, None for any other norm."""
    if not isinstance(norm, str) or "GroupNorm" not in norm:
        return None
    try:
        groups = int(norm.replace("GroupNorm", ""))
    except ValueError:
        groups = 0
    if groups < 1:
        raise ValueError(f"MDX23C: norm {norm!r} needs a positive group count, e.g. 'GroupNorm4'")
    return groups


def _make_norm(norm, channels: int) -> nn.Module:
    """ZFTurbo's ``get_norm``: BatchNorm, InstanceNorm, GroupNorm<N>, anything else identity."""
    if norm == "BatchNorm":
        return nn.BatchNorm2d(channels)
    if norm == "InstanceNorm":
        return nn.InstanceNorm2d(channels, affine=True)
    groups = _group_count(norm)
    if groups is not None:
        return nn.GroupNorm(num_groups=groups, num_channels=channels)
    return nn.Identity()


def _norm_act(norm: nn.Module, act: _Activation, x: torch.Tensor, consume: bool) -> torch.Tensor:
    """act(norm(x)) for an NCHW ``x``. ``consume``: the caller no longer needs ``x`` (only ever
    asked with gradients disabled), so it may be overwritten."""
    inference = not torch.is_grad_enabled()
    if isinstance(norm, nn.Identity):
        return act.inplace_(x) if consume else act(x)
    if isinstance(norm, nn.InstanceNorm2d) and not norm.track_running_stats:
        # ZFTurbo's InstanceNorm2d(affine=True): per-sample, per-channel statistics, i.e.
        # group norm with one group per channel.
        y = F.group_norm(x, x.shape[1], norm.weight, norm.bias, norm.eps)
    elif (consume and isinstance(norm, nn.BatchNorm2d) and not norm.training
          and norm.running_mean is not None):
        # Eval-mode batch norm is x * scale + shift per channel (PyTorch computes it so too).
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        y = torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1), out=x)
    else:
        y = norm(x)
    return act.inplace_(y) if inference else act(y)


def _mix_channels(weight: torch.Tensor, x: torch.Tensor, into: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """A 1x1 convolution: ``weight`` (O, I) over the channels of ``x`` (b, I, T, F), one
    (O, I) @ (I, T*F) product per batch item; added into ``into`` (b, O, T, F) in place when
    given (gradients disabled only). (``baddbmm_`` with a broadcast weight copies its
    operands on some sizes; 2-D ``mm``/``addmm_`` never do.)"""
    b, channels, t, f = x.shape
    if torch.is_grad_enabled():
        y = torch.matmul(weight, x.reshape(b, channels, t * f)).view(b, -1, t, f)
        return y if into is None else into + y
    if into is None:
        into = x.new_empty(b, weight.shape[0], t, f)
        for item in range(b):
            torch.mm(weight, x[item].view(channels, -1), out=into[item].view(-1, t * f))
    else:
        for item in range(b):
            into[item].view(-1, t * f).addmm_(weight, x[item].view(channels, -1))
    return into


class _TFCTDF(nn.Module):
    """A stack of TFC-TDF blocks (ZFTurbo's ``TFC_TDF``): in_c -> c channels, f frequencies."""

    def __init__(self, in_c: int, c: int, l: int, f: int, bn: int, norm, act: _Activation) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(l):
            block = nn.Module()
            block.tfc1 = nn.Sequential(_make_norm(norm, in_c), act,
                                       nn.Conv2d(in_c, c, 3, 1, 1, bias=False))
            block.tdf = nn.Sequential(_make_norm(norm, c), act, nn.Linear(f, f // bn, bias=False),
                                      _make_norm(norm, c), act, nn.Linear(f // bn, f, bias=False))
            block.tfc2 = nn.Sequential(_make_norm(norm, c), act,
                                       nn.Conv2d(c, c, 3, 1, 1, bias=False))
            block.shortcut = nn.Conv2d(in_c, c, 1, 1, 0, bias=False)
            self.blocks.append(block)
            in_c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, in_c, T, f) -> (b, c, T, f); ``x`` is left as it is."""
        inference = not torch.is_grad_enabled()
        x = x.contiguous()
        for block in self.blocks:
            tfc1, tdf, tfc2 = block.tfc1, block.tdf, block.tfc2
            # TFC: norm-act-conv3x3
            h = F.conv2d(_norm_act(tfc1[0], tfc1[1], x, consume=False), tfc1[2].weight, None, 1, 1)
            # TDF: h + Linear(act(norm(Linear(act(norm(h)))))) over the frequency axis
            u = F.linear(_norm_act(tdf[0], tdf[1], h, consume=False), tdf[2].weight)
            u = _norm_act(tdf[3], tdf[4], u, consume=inference)
            if inference:
                h.view(-1, h.shape[-1]).addmm_(u.view(-1, u.shape[-1]), tdf[5].weight.t())
            else:
                h = h + F.linear(u, tdf[5].weight)
            # TFC: norm-act-conv3x3, plus the 1x1 shortcut of the block's input
            y = F.conv2d(_norm_act(tfc2[0], tfc2[1], h, consume=inference), tfc2[2].weight,
                         None, 1, 1)
            x = _mix_channels(block.shortcut.weight.flatten(1), x, into=y)
        return x


class _Downscale(nn.Module):
    """norm-act-conv, kernel = stride = scale (ZFTurbo's ``Downscale``)."""

    def __init__(self, in_c: int, out_c: int, scale: tuple[int, int], norm, act) -> None:
        super().__init__()
        self.conv = nn.Sequential(_make_norm(norm, in_c), act,
                                  nn.Conv2d(in_c, out_c, scale, scale, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is left as it is (it is also the skip connection)."""
        norm, act, conv = self.conv
        return F.conv2d(_norm_act(norm, act, x, consume=False), conv.weight, None, conv.stride)


class _Upscale(nn.Module):
    """norm-act-transposed conv, kernel = stride = scale (ZFTurbo's ``Upscale``)."""

    def __init__(self, in_c: int, out_c: int, scale: tuple[int, int], norm, act) -> None:
        super().__init__()
        self.conv = nn.Sequential(_make_norm(norm, in_c), act,
                                  nn.ConvTranspose2d(in_c, out_c, scale, scale, bias=False))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(b, in_c, T, F) -> (b, out_c, T * scale[0], F * scale[1]), written into ``out``
        when given. With gradients disabled ``x`` is overwritten."""
        norm, act, conv = self.conv
        x = _norm_act(norm, act, x.contiguous(), consume=not torch.is_grad_enabled())
        b, in_c, t, f = x.shape
        _, out_c, st, sf = conv.weight.shape
        # A kernel the size of its stride: each input pixel spreads over its own st x sf
        # output patch: one matrix product (out_c*st*sf, in_c) @ (in_c, T*F).
        y = _mix_channels(conv.weight.view(in_c, -1).t(), x)         # (b, o*st*sf, T, F)
        y = y.view(b, out_c, st, sf, t, f).permute(0, 1, 4, 2, 5, 3)  # (b, o, T, st, F, sf)
        if out is None:
            return y.reshape(b, out_c, t * st, f * sf)
        out.view(b, out_c, t, st, f, sf).copy_(y)
        return out


# --------------------------------------------------------------------------------------
# The network


class MDX23C(nn.Module):
    """ZFTurbo's ``TFC_TDF_net`` from its config values.

    ``audio_channels`` is the config's ``audio.num_channels``; ``num_target_instruments`` is
    1 with a ``training.target_instrument``, else ``len(training.instruments)``; the other
    keywords are the config's ``audio`` (n_fft, hop_length, dim_f) and ``model`` values.

    forward: (batch, audio_channels, time) -> (batch, num_target_instruments,
    audio_channels, hop_length * (time // hop_length)).
    """

    def __init__(self, *, n_fft: int, hop_length: int, dim_f: int, audio_channels: int = 2,
                 num_subbands: int, num_scales: int, scale: Sequence[int],
                 num_blocks_per_scale: int, num_channels: int, growth: int,
                 bottleneck_factor: int, norm, act: str, num_target_instruments: int) -> None:
        super().__init__()
        n_fft = _positive_int("n_fft", n_fft, 2)
        hop_length = _positive_int("hop_length", hop_length)
        dim_f = _positive_int("dim_f", dim_f)
        audio_channels = _positive_int("audio_channels", audio_channels)
        num_subbands = _positive_int("num_subbands", num_subbands)
        num_scales = _positive_int("num_scales", num_scales, 0)
        num_blocks_per_scale = _positive_int("num_blocks_per_scale", num_blocks_per_scale)
        num_channels = _positive_int("num_channels", num_channels)
        growth = _positive_int("growth", growth, 0)
        bottleneck_factor = _positive_int("bottleneck_factor", bottleneck_factor)
        num_target_instruments = _positive_int("num_target_instruments", num_target_instruments)
        try:
            scale = tuple(scale)
        except TypeError:
            scale = (scale,)
        if len(scale) != 2:
            raise ValueError(f"MDX23C: scale must be a pair (time, frequency), not {scale!r}")
        scale = (_positive_int("scale[0]", scale[0]), _positive_int("scale[1]", scale[1]))
        if dim_f > n_fft // 2 + 1:
            raise ValueError(f"MDX23C: dim_f {dim_f} exceeds the {n_fft // 2 + 1} frequency bins "
                             f"of n_fft {n_fft}")
        if dim_f % num_subbands:
            raise ValueError(f"MDX23C: dim_f {dim_f} is not divisible by num_subbands "
                             f"{num_subbands}")
        f = dim_f // num_subbands
        if f % scale[1] ** num_scales:
            raise ValueError(
                f"MDX23C: the {f} frequencies per sub-band (dim_f {dim_f} / num_subbands "
                f"{num_subbands}) are not divisible by scale[1] ** num_scales = "
                f"{scale[1]} ** {num_scales}")
        if f // scale[1] ** num_scales // bottleneck_factor < 1:
            raise ValueError(
                f"MDX23C: the bottleneck's {f // scale[1] ** num_scales} frequencies are fewer "
                f"than bottleneck_factor {bottleneck_factor}")
        groups = _group_count(norm)
        widths = [num_channels + s * growth for s in range(num_scales + 1)]
        if groups is not None and any(w % groups for w in widths):
            raise ValueError(f"MDX23C: norm {norm!r}: the channel counts {widths} are not all "
                             f"divisible by {groups} groups")
        act_module = _Activation(act)

        self.n_fft = n_fft
        self.hop_length = hop_length
        self.dim_f = dim_f
        self.audio_channels = audio_channels
        self.num_subbands = num_subbands
        self.num_scales = num_scales
        self.scale = scale
        self.num_target_instruments = num_target_instruments
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.compute_dtype = torch.float32
        """What the U-Net computes in (``set_compute_dtype``)."""

        dim_c = num_subbands * audio_channels * 2
        self.dim_c = dim_c
        l, c, g, bn = num_blocks_per_scale, num_channels, growth, bottleneck_factor

        self.first_conv = nn.Conv2d(dim_c, c, 1, 1, 0, bias=False)
        self.encoder_blocks = nn.ModuleList()
        for _ in range(num_scales):
            block = nn.Module()
            block.tfc_tdf = _TFCTDF(c, c, l, f, bn, norm, act_module)
            block.downscale = _Downscale(c, c + g, scale, norm, act_module)
            f = f // scale[1]
            c += g
            self.encoder_blocks.append(block)
        self.bottleneck_block = _TFCTDF(c, c, l, f, bn, norm, act_module)
        self.decoder_blocks = nn.ModuleList()
        for _ in range(num_scales):
            block = nn.Module()
            block.upscale = _Upscale(c, c - g, scale, norm, act_module)
            f = f * scale[1]
            c -= g
            block.tfc_tdf = _TFCTDF(2 * c, c, l, f, bn, norm, act_module)
            self.decoder_blocks.append(block)
        self.final_conv = nn.Sequential(
            nn.Conv2d(c + dim_c, c, 1, 1, 0, bias=False),
            act_module,
            nn.Conv2d(c, num_target_instruments * dim_c, 1, 1, 0, bias=False),
        )

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Run the U-Net (every convolution, linear, norm and activation) in ``dtype``
        (bfloat16 or float16), for ``--precision``: its weights and batch-norm statistics
        converted once, here (load the weights first). The STFT and the iSTFT stay float32:
        the sub-band spectrogram goes in as ``dtype`` and the final planes come back as
        float32. The norms take ``dtype`` and accumulate in float32 (PyTorch's kernels do
        so for 16-bit inputs)."""
        for child in self.children():  # not the window: it is this module's own buffer
            child.to(dtype)
        self.compute_dtype = dtype

    # ----------------------------------------------------------------------------------
    # Chunk lengths

    @property
    def frame_multiple(self) -> int:
        """A chunk's STFT frame count must be a multiple of this."""
        return self.scale[0] ** self.num_scales

    def is_valid_chunk(self, length: int) -> bool:
        """Whether forward() takes ``length`` samples and gives exactly ``length`` back."""
        return (not isinstance(length, bool) and isinstance(length, int)
                and length > self.n_fft // 2 and length % self.hop_length == 0
                and (1 + length // self.hop_length) % self.frame_multiple == 0)

    def chunk_size_for(self, segment_samples: int) -> int:
        """The longest valid chunk of at most ``segment_samples`` (ValueError if none)."""
        chunk = chunk_size_for(segment_samples, self.hop_length, self.num_scales, self.scale[0])
        if chunk <= self.n_fft // 2:
            raise ValueError(
                f"MDX23C: a segment of {segment_samples} samples gives a chunk of {chunk}, not "
                f"longer than n_fft / 2 = {self.n_fft // 2} (the STFT's reflection padding)")
        return chunk

    def output_length(self, length: int) -> int:
        """The number of samples forward() returns for ``length`` input samples."""
        return self.hop_length * (length // self.hop_length)

    # ----------------------------------------------------------------------------------
    # Spectrograms

    def _spectrogram(self, mix: torch.Tensor) -> torch.Tensor:
        """(b, c, time) -> the sub-band spectrogram (b, 2cK, T, dim_f / K): ZFTurbo's STFT and
        cac2cws, with time and frequency already swapped."""
        b, c, length = mix.shape
        k = self.num_subbands
        spec = torch.stft(mix.reshape(b * c, length), self.n_fft, self.hop_length,
                          window=self.window.to(mix.dtype), center=True, return_complex=True)
        spec = torch.view_as_real(spec)[:, :self.dim_f]             # (b*c, dim_f, T, 2)
        t = spec.shape[2]
        spec = spec.reshape(b, c, k, self.dim_f // k, t, 2)
        # plane = (channel * 2 + real/imaginary) * K + sub-band
        return spec.permute(0, 1, 5, 2, 4, 3).reshape(b, self.dim_c, t, self.dim_f // k)

    def _waveforms(self, planes: torch.Tensor) -> torch.Tensor:
        """The final (b, targets * 2cK, T, F) planes -> (b, targets, c, hop * (T - 1))."""
        b, _, t, fk = planes.shape
        n, c, k = self.num_target_instruments, self.audio_channels, self.num_subbands
        bins = self.n_fft // 2 + 1
        spec = planes.new_empty(b, n, c, t, bins, 2)                # frames-major for the iSTFT
        spec[:, :, :, :, self.dim_f:].zero_()
        spec[:, :, :, :, :self.dim_f].view(b, n, c, t, k, fk, 2).copy_(
            planes.view(b, n, c, 2, k, t, fk).permute(0, 1, 2, 5, 4, 6, 3))
        spec = torch.view_as_complex(spec).view(b * n * c, t, bins).transpose(1, 2)
        audio = torch.istft(spec, self.n_fft, self.hop_length, window=self.window.to(planes.dtype),
                            center=True)
        return audio.view(b, n, c, -1)

    # ----------------------------------------------------------------------------------

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(batch, audio_channels, time) -> (batch, num_target_instruments, audio_channels,
        hop_length * (time // hop_length))."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"MDX23C: expected (batch, {self.audio_channels}, time), "
                             f"got {tuple(mix.shape)}")
        b, _, length = mix.shape
        frames = 1 + length // self.hop_length
        if length <= self.n_fft // 2 or frames % self.frame_multiple:
            raise ValueError(
                f"MDX23C: a chunk of {length} samples has {frames} STFT frames; the network needs "
                f"a multiple of {self.frame_multiple} and more than n_fft / 2 = "
                f"{self.n_fft // 2} samples (chunk_size_for gives a valid length)")
        if (torch.is_grad_enabled() and not mix.requires_grad
                and not any(p.requires_grad for p in self.parameters())):
            with torch.no_grad():  # nothing to differentiate: take the in-place path
                return self._forward(mix)
        return self._forward(mix)

    def _forward(self, mix: torch.Tensor) -> torch.Tensor:
        b = mix.shape[0]
        inference = not torch.is_grad_enabled()

        spec = self._spectrogram(mix).to(self.compute_dtype)        # (b, 2cK, T, F)
        first = _mix_channels(self.first_conv.weight.flatten(1), spec)

        x = first
        skips = []
        for block in self.encoder_blocks:
            x = block.tfc_tdf(x)
            skips.append(x)
            x = block.downscale(x)
        x = self.bottleneck_block(x)
        for block in self.decoder_blocks:
            skip = skips.pop()
            if inference:  # the upscaled half goes straight into the concatenation
                joined = skip.new_empty(b, 2 * skip.shape[1], *skip.shape[2:])
                block.upscale(x, out=joined[:, :skip.shape[1]])
                joined[:, skip.shape[1]:].copy_(skip)
                x = joined
            else:
                x = torch.cat([block.upscale(x), skip], 1)
            del skip
            x = block.tfc_tdf(x)

        x = x.mul_(first) if inference else x * first              # "reduce artifacts"
        # final_conv on cat([spec, x]), without the concatenation: split its first weight
        conv0, act, conv2 = self.final_conv
        weight = conv0.weight.flatten(1)
        y = _mix_channels(weight[:, self.dim_c:], x)
        y = _mix_channels(weight[:, :self.dim_c], spec, into=y)
        y = act.inplace_(y) if inference else act(y)
        y = _mix_channels(conv2.weight.flatten(1), y)
        return self._waveforms(y.float())
