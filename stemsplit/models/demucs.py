"""Demucs v2/v3 time-domain network (inference only).

Equivalent to ``demucs.demucs.Demucs`` from demucs 4.1.0: a U-Net of strided
1-d convolutions on the waveform, optionally with DConv residual branches and
a bottleneck BLSTM.  Used by the ``mdx`` bag.  Parameter names and
``state_dict`` keys match the published checkpoints.
"""

from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .layers import BLSTM, DConv
from .resample import resample_frac

__all__ = ["Demucs", "center_trim"]


def center_trim(tensor: torch.Tensor, reference: tp.Union[torch.Tensor, int]) -> torch.Tensor:
    """Crop the last axis of ``tensor`` ``(..., T)`` to the length of ``reference``.

    ``reference`` is a tensor (its last axis is used) or a length.  The excess
    is removed equally on both sides, the odd sample on the right.
    """
    target = reference.shape[-1] if isinstance(reference, torch.Tensor) else int(reference)
    excess = tensor.shape[-1] - target
    if excess < 0:
        raise ValueError(f"tensor must be larger than reference. Delta is {excess}.")
    if excess:
        tensor = tensor[..., excess // 2:excess // 2 + target]
    return tensor


class Demucs(nn.Module):
    """Time-domain Demucs.

    ``encoder[i]`` is ``Sequential(conv(kernel, stride), norm, act, [DConv],
    [conv 1x1, norm, GLU/ReLU])``; ``decoder[i]`` (stored outermost last) is
    ``Sequential([conv(1 + 2 context), norm, GLU/ReLU], [DConv], conv_transpose,
    [norm, act])``.  The input is optionally normalised, padded to a valid
    length, upsampled x2 (``resample``) and the output is processed in reverse.

    Args (same as demucs'):
        sources: names of the output sources.
        audio_channels: 1 or 2.
        channels: channels of the first layer, multiplied by ``growth`` per layer.
        depth: number of encoder / decoder layers.
        rewrite: add the 1x1 (encoder) and context (decoder) convolutions.
        lstm_layers: layers of the bottleneck BLSTM (0: none).
        kernel_size, stride: of the main convolutions.
        context: context of the decoder rewrite convolution.
        gelu: GELU (else ReLU) after the main convolutions.
        glu: GLU (else ReLU) after the rewrite convolutions.
        norm_starts, norm_groups: GroupNorm from this layer on, with these groups.
        dconv_mode: DConv in the encoder (bit 1) and/or decoder (bit 2).
        dconv_depth, dconv_comp, dconv_attn, dconv_lstm, dconv_init: DConv options
            (attention / LSTM from the layer index given on).
        normalize: standardise the input and undo it on the output.
        resample: run the network at twice the sample rate.
        rescale: training-time initialisation only (ignored).
        samplerate: sample rate of the audio, in Hz.
        segment: duration in seconds of the chunks to process.
    """

    def __init__(self,
                 sources: tp.List[str],
                 audio_channels: int = 2,
                 channels: int = 64,
                 growth: float = 2.,
                 depth: int = 6,
                 rewrite: bool = True,
                 lstm_layers: int = 0,
                 kernel_size: int = 8,
                 stride: int = 4,
                 context: int = 1,
                 gelu: bool = True,
                 glu: bool = True,
                 norm_starts: int = 4,
                 norm_groups: int = 4,
                 dconv_mode: int = 1,
                 dconv_depth: int = 2,
                 dconv_comp: float = 4,
                 dconv_attn: int = 4,
                 dconv_lstm: int = 4,
                 dconv_init: float = 1e-4,
                 normalize: bool = True,
                 resample: bool = True,
                 rescale: float = 0.1,
                 samplerate: int = 44100,
                 segment: float = 4 * 10) -> None:
        super().__init__()
        self.audio_channels = audio_channels
        self.sources = sources
        self.kernel_size = kernel_size
        self.context = context
        self.stride = stride
        self.depth = depth
        self.resample = resample
        self.channels = channels
        self.normalize = normalize
        self.samplerate = samplerate
        self.segment = segment
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        # Unused, but part of the published state (an empty ModuleList has no keys).
        self.skip_scales = nn.ModuleList()

        rewrite_scale = 2 if glu else 1

        def rewrite_act() -> nn.Module:
            return nn.GLU(dim=1) if glu else nn.ReLU()

        def main_act() -> nn.Module:
            return nn.GELU() if gelu else nn.ReLU()

        in_channels = audio_channels
        for index in range(depth):
            def make_norm(dim: int, index: int = index) -> nn.Module:
                return nn.GroupNorm(norm_groups, dim) if index >= norm_starts else nn.Identity()

            def make_dconv() -> DConv:
                return DConv(channels, depth=dconv_depth, init=dconv_init, compress=dconv_comp,
                             attn=index >= dconv_attn, lstm=index >= dconv_lstm)

            encode: tp.List[nn.Module] = [
                nn.Conv1d(in_channels, channels, kernel_size, stride),
                make_norm(channels),
                main_act(),
            ]
            if dconv_mode & 1:
                encode.append(make_dconv())
            if rewrite:
                encode += [nn.Conv1d(channels, rewrite_scale * channels, 1),
                           make_norm(rewrite_scale * channels), rewrite_act()]
            self.encoder.append(nn.Sequential(*encode))

            out_channels = in_channels if index > 0 else len(sources) * audio_channels
            decode: tp.List[nn.Module] = []
            if rewrite:
                decode += [nn.Conv1d(channels, rewrite_scale * channels, 2 * context + 1,
                                     padding=context),
                           make_norm(rewrite_scale * channels), rewrite_act()]
            if dconv_mode & 2:
                decode.append(make_dconv())
            decode.append(nn.ConvTranspose1d(channels, out_channels, kernel_size, stride))
            if index > 0:
                decode += [make_norm(out_channels), main_act()]
            self.decoder.insert(0, nn.Sequential(*decode))

            in_channels = channels
            channels = int(growth * channels)

        self.lstm: tp.Optional[BLSTM] = BLSTM(in_channels, lstm_layers) if lstm_layers else None

    def valid_length(self, length: int) -> int:
        """Smallest length >= ``length`` that the convolutions use without leftover.

        The input is padded to this length internally, so any length works; the
        chunking engine uses it to choose chunk sizes.
        """
        if self.resample:
            length *= 2
        for _ in range(self.depth):
            length = max(1, math.ceil((length - self.kernel_size) / self.stride) + 1)
        for _ in range(self.depth):
            length = (length - 1) * self.stride + self.kernel_size
        if self.resample:
            length = math.ceil(length / 2)
        return int(length)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate ``mix`` ``(B, audio_channels, T)`` into ``(B, sources, audio_channels, T)``."""
        length = mix.shape[-1]
        x = mix
        if self.normalize:
            mono = mix.mean(dim=1, keepdim=True)
            mean = mono.mean(dim=-1, keepdim=True)
            std = mono.std(dim=-1, keepdim=True)
            x = (x - mean) / (1e-5 + std)

        missing = self.valid_length(length) - length
        x = F.pad(x, (missing // 2, missing - missing // 2))
        if self.resample:
            x = resample_frac(x, 1, 2)

        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        if self.lstm is not None:
            x = self.lstm(x)
        for decode in self.decoder:
            x = decode(x + center_trim(skips.pop(), x))

        if self.resample:
            x = resample_frac(x, 2, 1)
        if self.normalize:
            x = x * std + mean
        x = center_trim(x, length)
        return x.view(x.shape[0], len(self.sources), self.audio_channels, x.shape[-1])

    def load_state_dict(self, state_dict: tp.Mapping[str, torch.Tensor], strict: bool = True,
                        assign: bool = False):
        """Load a state, renaming keys of older checkpoints.

        Checkpoints from before the DConv era stored the 1x1 convolutions at
        index 2 of each layer (``encoder.0.2.weight``); they are now at index 3.
        """
        state = dict(state_dict)
        for index in range(self.depth):
            for part in ("encoder", "decoder"):
                for name in ("bias", "weight"):
                    old, new = f"{part}.{index}.2.{name}", f"{part}.{index}.3.{name}"
                    if old in state and new not in state:
                        state[new] = state.pop(old)
        return super().load_state_dict(state, strict=strict, assign=assign)
