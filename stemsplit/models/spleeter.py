"""Deezer's Spleeter: one U-Net per stem over the magnitude spectrogram, ratio masks, iSTFT.

Written after spleeter 2.4.2 (``spleeter/model/__init__.py``: ``EstimatorSpecBuilder``;
``spleeter/model/functions/unet.py``), for the TensorFlow checkpoints Deezer publishes
(read by ``stemsplit.families.spleeter.checkpoint``). Spleeter over a whole track:

1. the track (samples, 2) gets ``FRONT_PADDING`` (4096) zeros in front; a mono track is
   duplicated to stereo first, and only the first two of more channels are used;
2. ``tf.signal.stft``: frames of 4096 samples every 1024, a periodic Hann window, no
   centring, ``pad_end`` (zeros after the end until the last frame starting inside the
   signal is complete);
3. the frames are zero-padded to a multiple of ``BLOCK_FRAMES`` (512) and cut into
   non-overlapping blocks of 512 frames; each block's magnitude at bins [0, F) (F = 1024,
   11,025 Hz; the "-16kHz" configs take F = 1536 with the same weights) goes through every
   stem's U-Net;
4. ratio masks ``(y_i^2 + EPSILON / n) / (sum_j y_j^2 + EPSILON)`` over the n stems' U-Net
   outputs ``y``; bins >= F get a mask of 0 (``mask_extension: zeros``);
5. each stem: the mask times the complex STFT, ``tf.signal.inverse_stft`` with the same
   periodic Hann window (a windowed overlap-add, not divided by the window-square sum),
   times ``WINDOW_COMPENSATION`` (2/3: a Hann window squared sums to 3/2 at hop N/4), then
   cropped to [4096, 4096 + n).

The inverse STFT is a plain overlap-add, so it splits over the blocks: ``SpleeterNet``
takes one block of the front-padded track, samples [BLOCK_STRIDE * b, BLOCK_STRIDE * b +
BLOCK_SAMPLES) (its 512 frames exactly, zeros past the track's end), and returns that
block's share of every stem's overlap-add. Blocks at stride ``BLOCK_STRIDE`` summed (they
overlap by 3072 samples) give Deezer's output exactly.

The U-Net (``apply_unet``): 6 encoder convolutions 5x5, stride 2, 'same', 16..512 filters,
each -> batch norm (eps 1e-3) -> the conv activation (LeakyReLU(0.2), or ELU/ReLU by
config); 6 transposed convolutions 5x5 stride 2 'same' (256, 128, 64, 32, 16, 1 filters),
each -> the deconv activation (ReLU, or ELU/LeakyReLU) -> batch norm, then concatenated
after the raw (pre-norm) output of the matching encoder convolution: the first decoder
takes encoder 6's raw output (its batch norm is built but unused); dropout is inactive at
inference. A final 4x4 convolution, dilation 2, 'same', with 2 filters (the channels)
gives the mask logits; ``unet.unet`` (2 and 4 stems) applies a sigmoid and multiplies by
the input magnitude, ``unet.softmax_unet`` (5 stems) takes a softmax of the logits across
the stems and multiplies by the input magnitude. TensorFlow's 'same' for stride 2 pads
(total // 2, total - total // 2) with total = max((out - 1) * 2 + 5 - in, 0): (1, 2) on
even sizes; a transposed convolution's full output (2H + 3) is cropped to [1, 1 + 2H).

Layout here: (batch, channels, time frames, frequency bins), TensorFlow's NHWC turned NCHW
with H the time axis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError

FRAME_LENGTH = 4096
FRAME_STEP = 1024
BLOCK_FRAMES = 512
FRONT_PADDING = 4096
BLOCK_SAMPLES = (BLOCK_FRAMES - 1) * FRAME_STEP + FRAME_LENGTH  # 527360
BLOCK_STRIDE = BLOCK_FRAMES * FRAME_STEP  # 524288
WINDOW_COMPENSATION = 2.0 / 3.0
EPSILON = 1e-10
CHANNELS = 2
BATCH_NORM_EPSILON = 1e-3
FILTERS = (16, 32, 64, 128, 256, 512)
BINS = FRAME_LENGTH // 2 + 1

CONV_ACTIVATIONS = ("LeakyReLU", "ELU", "ReLU")
"""``conv_activation`` (the encoder's): spleeter's default (no key) is LeakyReLU(0.2)."""
DECONV_ACTIVATIONS = ("ReLU", "ELU", "LeakyReLU")
"""``deconv_activation`` (the decoder's): spleeter's default (no key) is ReLU."""
MODEL_TYPES = ("unet.unet", "unet.softmax_unet")


def _activation(name: str) -> nn.Module:
    if name == "LeakyReLU":
        return nn.LeakyReLU(0.2)
    if name == "ELU":
        return nn.ELU(alpha=1.0)
    return nn.ReLU()


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _BatchNorm(nn.Module):
    """Inference batch normalisation with stored statistics (Keras' at eps 1e-3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("gamma", torch.ones(channels))
        self.register_buffer("beta", torch.zeros(channels))
        self.register_buffer("moving_mean", torch.zeros(channels))
        self.register_buffer("moving_variance", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.moving_mean, self.moving_variance, self.gamma, self.beta,
                            False, 0.0, BATCH_NORM_EPSILON)


class SpleeterUNet(nn.Module):
    """One stem's U-Net: magnitude (batch, 2, T, F) -> mask logits (batch, 2, T, F).

    T and F must be multiples of 64. ``forward`` returns the logits of the last
    convolution; ``SpleeterNet`` applies the sigmoid (or the softmax across stems) and the
    multiplication by the input magnitude.
    """

    def __init__(self, conv_activation: str = "LeakyReLU", deconv_activation: str = "ReLU") -> None:
        super().__init__()
        if conv_activation not in CONV_ACTIVATIONS:
            raise ModelError(f"unknown Spleeter conv_activation {conv_activation!r}; "
                             f"choose {', '.join(CONV_ACTIVATIONS)}")
        if deconv_activation not in DECONV_ACTIVATIONS:
            raise ModelError(f"unknown Spleeter deconv_activation {deconv_activation!r}; "
                             f"choose {', '.join(DECONV_ACTIVATIONS)}")
        inputs = (CHANNELS,) + FILTERS[:-1]
        self.encoders = nn.ModuleList(nn.Conv2d(i, o, 5, stride=2) for i, o in zip(inputs, FILTERS))
        # Six norms as in the checkpoint; the sixth is never applied (as in spleeter).
        self.encoder_norms = nn.ModuleList(_BatchNorm(o) for o in FILTERS)
        outputs = FILTERS[-2::-1] + (1,)  # 256, 128, 64, 32, 16, 1
        decoder_inputs = (FILTERS[-1],) + tuple(2 * o for o in outputs[:-1])
        self.decoders = nn.ModuleList(
            nn.ConvTranspose2d(i, o, 5, stride=2) for i, o in zip(decoder_inputs, outputs))
        self.decoder_norms = nn.ModuleList(_BatchNorm(o) for o in outputs)
        self.final = nn.Conv2d(1, CHANNELS, 4, dilation=2)
        self.conv_activation = _activation(conv_activation)
        self.deconv_activation = _activation(deconv_activation)
        self.decoder_phases: list[list[torch.Tensor]] | None = None
        """Each decoder's kernel cut into its four stride phases (``use_polyphase``)."""

    def use_polyphase(self) -> None:
        """Run the decoders as four plain convolutions each (``_polyphase_transposed_conv``),
        their kernels cut once, here, from the decoders' current weights. On the CPU in
        bfloat16, oneDNN's transposed convolutions are slower than in float32 (293 ms
        against 251 ms for Spleeter's five wide decoders at 4x the block's area, AMD EPYC
        with AVX512-BF16), its plain ones twice as fast: the phases take 104 ms."""
        self.decoder_phases = [_kernel_phases(deconv) for deconv in self.decoders]

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        x = _in_unet_layout(magnitude)
        skips = []
        for index, (conv, norm) in enumerate(zip(self.encoders, self.encoder_norms)):
            top, bottom = _same_padding(x.shape[-2], 5, 2)
            left, right = _same_padding(x.shape[-1], 5, 2)
            raw = conv(F.pad(x, (left, right, top, bottom)))
            skips.append(raw)
            if index < len(self.encoders) - 1:
                x = self.conv_activation(norm(raw))
        x = skips.pop()
        for index, (deconv, norm) in enumerate(zip(self.decoders, self.decoder_norms)):
            height, width = x.shape[-2:]
            if self.decoder_phases is not None:
                full = _polyphase_transposed_conv(deconv, self.decoder_phases[index], x)
            else:
                full = _transposed_conv(deconv, x)  # (2H + 3, 2W + 3): crop TF's 'same'
            top = _same_padding(2 * height, 5, 2)[0]
            left = _same_padding(2 * width, 5, 2)[0]
            x = norm(self.deconv_activation(full[..., top : top + 2 * height,
                                                 left : left + 2 * width]))
            if skips:
                x = torch.cat([skips.pop(), x], dim=1)
        top, bottom = _same_padding(x.shape[-2], 7, 1)
        left, right = _same_padding(x.shape[-1], 7, 1)
        return self.final(F.pad(x, (left, right, top, bottom))).contiguous()


def _transposed_conv(deconv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``deconv(x)``; on the CPU, a decoder with one output channel (the last) as one matrix
    product and a col2im sum (``F.fold``), 2.2x faster there than oneDNN's transposed
    convolution, which cannot spread one output channel over its vector lanes."""
    plain = (deconv.padding == (0, 0) and deconv.output_padding == (0, 0)
             and deconv.dilation == (1, 1) and deconv.groups == 1)
    if x.device.type != "cpu" or deconv.out_channels != 1 or not plain:
        return deconv(x)
    batch, channels, height, width = x.shape
    kernel_height, kernel_width = deconv.kernel_size
    stride_height, stride_width = deconv.stride
    weight = deconv.weight.reshape(channels, kernel_height * kernel_width).t()
    # bmm reads the channels-last input as it lies (matmul would copy its product).
    columns = torch.bmm(weight.expand(batch, -1, -1), x.reshape(batch, channels, height * width))
    size = ((height - 1) * stride_height + kernel_height, (width - 1) * stride_width + kernel_width)
    out = F.fold(columns, size, deconv.kernel_size, stride=deconv.stride)
    return out if deconv.bias is None else out.add_(deconv.bias[:, None, None])


def _kernel_phases(deconv: nn.ConvTranspose2d) -> list[torch.Tensor]:
    """A stride-2 transposed convolution's kernel (in, out, kh, kw) as the four plain
    convolution kernels (out, in, th, tw) of its output phases (row, column parity): taps
    ph, ph + 2, ... of each axis, flipped (a transposed convolution is the correlation
    with the flipped kernel), channels-last."""
    return [deconv.weight[:, :, row::2, column::2].flip(2, 3).transpose(0, 1)
            .contiguous(memory_format=torch.channels_last)
            for row in range(2) for column in range(2)]


def _polyphase_transposed_conv(deconv: nn.ConvTranspose2d, phases: list[torch.Tensor],
                               x: torch.Tensor) -> torch.Tensor:
    """``deconv(x)`` (stride 2, no padding: the full (2H + k - 2, 2W + k - 2) output) as four
    plain convolutions, one per output phase: output row 2m + ph is the sum over j of input
    row m - j times tap ph + 2j, a full-padded convolution with the phase's kernel; the four
    results interleave into the output."""
    batch, _, height, width = x.shape
    kernel_height, kernel_width = deconv.kernel_size
    out = torch.empty((batch, deconv.out_channels, 2 * height + kernel_height - 2,
                       2 * width + kernel_width - 2), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    for index, kernel in enumerate(phases):
        row, column = divmod(index, 2)
        taps_height, taps_width = kernel.shape[-2:]
        out[:, :, row::2, column::2] = F.conv2d(x, kernel, deconv.bias,
                                                padding=(taps_height - 1, taps_width - 1))
    return out


def _in_unet_layout(magnitude: torch.Tensor) -> torch.Tensor:
    """The U-Net's input in the layout it runs in: channels-last on the CPU.

    PyTorch's CPU transposed convolutions compute in the channels-last layout whatever their
    input's; given a contiguous input they convert it and then convert the output back, and
    those copies took more time than the decoders' arithmetic. In channels-last from the
    start, every layer (pads, convolutions, norms, activations, concatenations) keeps that
    layout; the only layout copies left are of the 2-channel input and logits, and of the
    weights, which PyTorch converts on every call (about 5% of a block, left as it is).
    """
    if magnitude.device.type != "cpu":
        return magnitude
    return magnitude.contiguous(memory_format=torch.channels_last)


def _tf_name(base: str, index: int) -> str:
    return base if index == 0 else f"{base}_{index}"


class SpleeterNet(nn.Module):
    """All stems of a Spleeter model: a block of audio -> its share of every stem.

    ``instruments`` in the config's ``instrument_list`` order (the order of the U-Nets in
    the checkpoint): 2stems vocals, accompaniment; 4stems vocals, drums, bass, other;
    5stems vocals, piano, drums, bass, other. ``model_type`` is the config's
    ``model.type``: "unet.unet" (sigmoid masks; 2 and 4 stems) or "unet.softmax_unet"
    (softmax across stems; 5 stems). The activations are the config's
    ``model.params.conv_activation``/``deconv_activation`` (2stems: none given, so
    LeakyReLU(0.2) and ReLU; 4 and 5 stems: ELU and ELU).
    """

    def __init__(
        self,
        instruments: Sequence[str],
        frequency_bins: int = 1024,
        conv_activation: str = "LeakyReLU",
        deconv_activation: str = "ReLU",
        model_type: str = "unet.unet",
        separation_exponent: float = 2.0,
    ) -> None:
        super().__init__()
        if not instruments:
            raise ModelError("a Spleeter model needs at least one instrument")
        if model_type not in MODEL_TYPES:
            raise ModelError(f"unsupported Spleeter model type {model_type!r}; "
                             f"choose {', '.join(MODEL_TYPES)}")
        if not 0 < frequency_bins <= BINS or frequency_bins % 64:
            raise ModelError(f"Spleeter frequency_bins must be a multiple of 64 in "
                             f"[64, {BINS}], not {frequency_bins}")
        self.instruments = tuple(instruments)
        self.frequency_bins = frequency_bins
        self.model_type = model_type
        self.separation_exponent = separation_exponent
        self.unets = nn.ModuleList(SpleeterUNet(conv_activation, deconv_activation)
                                   for _ in self.instruments)
        self.register_buffer("window", torch.hann_window(FRAME_LENGTH, periodic=True,
                                                         dtype=torch.float64).float(),
                             persistent=False)
        self.compute_dtype = torch.float32
        """What the U-Nets compute in (``set_compute_dtype``)."""
        self.eval()

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Run the U-Nets in ``dtype`` (bfloat16 or float16), for ``--precision``.

        The convolution weights are converted once, here, to ``dtype`` (channels-last on
        the CPU, the layout the U-Nets run in, so oneDNN converts nothing per call); the
        batch norms keep float32 statistics (PyTorch's mixed-type batch norm computes in
        float32 and gives ``dtype``); on the CPU the decoders run as plain convolutions
        (``SpleeterUNet.use_polyphase``). The magnitude goes in as ``dtype`` and the logits
        come back in float32: the STFT, the sigmoid masks, the inverse FFT and the
        overlap-add stay in float32. Load the weights first."""
        on_cpu = self.window.device.type == "cpu"
        layout = torch.channels_last if on_cpu else torch.preserve_format
        for unet in self.unets:
            for convolution in (*unet.encoders, *unet.decoders, unet.final):
                convolution.to(dtype=dtype, memory_format=layout)
            if on_cpu:
                unet.use_polyphase()
        self.compute_dtype = dtype

    # -- weights ------------------------------------------------------------------------
    def _targets(self) -> dict[str, torch.Tensor]:
        """TensorFlow variable name -> the tensor it fills (torch layout), in build order:
        stem i owns conv2d_{7i..7i+6} (6 encoders, then the final one),
        conv2d_transpose_{6i..6i+5} and batch_normalization_{12i..12i+11} (6 encoder norms,
        then 6 decoder norms)."""
        targets: dict[str, torch.Tensor] = {}
        for stem, unet in enumerate(self.unets):
            convs = list(unet.encoders) + [unet.final]
            for offset, conv in enumerate(convs):
                name = _tf_name("conv2d", 7 * stem + offset)
                targets[f"{name}/kernel"] = conv.weight
                targets[f"{name}/bias"] = conv.bias
            for offset, deconv in enumerate(unet.decoders):
                name = _tf_name("conv2d_transpose", 6 * stem + offset)
                targets[f"{name}/kernel"] = deconv.weight
                targets[f"{name}/bias"] = deconv.bias
            for offset, norm in enumerate(list(unet.encoder_norms) + list(unet.decoder_norms)):
                name = _tf_name("batch_normalization", 12 * stem + offset)
                for field in ("gamma", "beta", "moving_mean", "moving_variance"):
                    targets[f"{name}/{field}"] = getattr(norm, field)
        return targets

    def load_variables(self, variables: Mapping[str, np.ndarray]) -> None:
        """Fill every layer from a checkpoint's variables (TensorFlow names and layouts:
        kernels HWIO, transposed kernels H W out in). ``global_step`` is ignored; anything
        missing, unexpected or of the wrong shape is refused with a ModelError."""
        targets = self._targets()
        missing = [name for name in targets if name not in variables]
        unexpected = sorted(name for name in variables
                            if name not in targets and name != "global_step")
        problems = []
        if missing:
            problems.append(f"missing {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected {_listing(unexpected)}")
        converted: dict[str, torch.Tensor] = {}
        wrong = []
        for name, target in targets.items():
            if name not in variables:
                continue
            value = np.asarray(variables[name])
            if value.ndim == 4:
                value = value.transpose(3, 2, 0, 1)
            if tuple(value.shape) != tuple(target.shape):
                wrong.append(f"{name} {tuple(np.asarray(variables[name]).shape)}")
                continue
            converted[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if wrong:
            problems.append(f"mis-shaped {_listing(wrong)}")
        if problems:
            raise ModelError(
                f"the checkpoint does not fit a {len(self.instruments)}-stem Spleeter U-Net: "
                + "; ".join(problems))
        with torch.no_grad():
            for name, value in converted.items():
                targets[name].copy_(value)

    # -- the maths ----------------------------------------------------------------------
    def forward(self, chunk: torch.Tensor) -> torch.Tensor:
        """(batch, 2, BLOCK_SAMPLES) -> (batch, stems, 2, BLOCK_SAMPLES).

        Any length (T - 1) * FRAME_STEP + FRAME_LENGTH with T a multiple of 64 works; Deezer's
        grid is T = 512 (``BLOCK_SAMPLES``)."""
        batch, channels, length = chunk.shape
        if channels != CHANNELS:
            raise ValueError(f"Spleeter takes stereo blocks, not {channels} channels")
        frames = (length - FRAME_LENGTH) // FRAME_STEP + 1
        whole = (frames - 1) * FRAME_STEP + FRAME_LENGTH == length
        if length < FRAME_LENGTH or not whole or frames % 64:
            raise ValueError(f"a Spleeter block is (T - 1) * {FRAME_STEP} + {FRAME_LENGTH} "
                             f"samples with T a multiple of 64, not {length}")
        window = self.window.to(chunk.device)
        # Frame-major throughout, (..., T, bins): torch.stft computes it so, the U-Nets take
        # (B, 2, T, F), and the inverse FFT and the overlap-add run along the last axis.
        spectrum = torch.stft(chunk.reshape(batch * channels, length).float(), FRAME_LENGTH,
                              FRAME_STEP, window=window, center=False, return_complex=True)
        spectrum = spectrum.transpose(-1, -2).reshape(batch, channels, frames, BINS)
        bins = self.frequency_bins
        magnitude = spectrum[..., :bins].abs()  # (B, 2, T, F)

        unet_input = magnitude.to(self.compute_dtype)
        logits = [unet(unet_input).float() for unet in self.unets]
        del unet_input
        if self.model_type == "unet.softmax_unet":
            shares = torch.softmax(torch.stack(logits), dim=0)
            outputs = [share * magnitude for share in shares]
        else:
            outputs = [torch.sigmoid(logit) * magnitude for logit in logits]
        del logits
        exponent = self.separation_exponent
        powers = [output.pow(exponent) for output in outputs]
        total = torch.stack(powers).sum(dim=0) + EPSILON
        stems = len(powers)
        masks = torch.stack([(power + EPSILON / stems) / total for power in powers], dim=1)
        del outputs, powers, total
        # The masked STFT (B, S, 2, T, BINS), zero above F: real and imaginary parts times
        # the mask: the values of the complex product, without making the mask complex.
        parts = torch.view_as_real(spectrum)[:, None, :, :, :bins]
        masked = parts.new_zeros((batch, stems, channels, frames, BINS, 2))
        torch.mul(parts, masks[..., None], out=masked[..., :bins, :])
        del masks, parts
        pieces = torch.fft.irfft(torch.view_as_complex(masked), n=FRAME_LENGTH, dim=-1)
        del masked
        pieces.mul_(window)  # (B, S, 2, T, FRAME_LENGTH)
        return _overlap_add(pieces).mul_(WINDOW_COMPENSATION)


def _overlap_add(frames: torch.Tensor) -> torch.Tensor:
    """(..., T, FRAME_LENGTH) windowed frames at hop FRAME_STEP -> (..., samples)."""
    *lead, count, length = frames.shape
    hops = length // FRAME_STEP
    parts = frames.reshape(*lead, count, hops, FRAME_STEP)
    out = frames.new_zeros(*lead, count + hops - 1, FRAME_STEP)
    for hop in range(hops):
        out[..., hop : hop + count, :] += parts[..., hop, :]
    return out.reshape(*lead, (count + hops - 1) * FRAME_STEP)


def _listing(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return f"{shown} (and {more} more)" if more > 0 else shown


_SUFFIX = re.compile(r"^(?P<base>[a-z0-9_]+?)(?:_(?P<index>\d+))?/")


def variable_layers(variables: Mapping[str, np.ndarray]) -> dict[str, int]:
    """How many layers of each kind (conv2d, conv2d_transpose, batch_normalization) a
    checkpoint holds, by parsing the integer suffixes (for a family to infer the stem
    count: conv2d layers // 7)."""
    highest: dict[str, int] = {}
    for name in variables:
        match = _SUFFIX.match(name)
        if not match:
            continue
        base = match.group("base")
        index = int(match.group("index") or 0)
        highest[base] = max(highest.get(base, -1), index)
    return {base: index + 1 for base, index in highest.items()}
