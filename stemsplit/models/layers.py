"""Building blocks shared by the Demucs v2, HDemucs and HTDemucs models.

Every class here mirrors, for inference only, a module of the published
demucs 4 code base: constructor parameter names, defaults and submodule
attribute names are the same so that published ``state_dict`` keys and shapes
load strictly.  Training-only behaviour (weight re-initialisation, rescaling,
dropout) is left out.

Shape conventions used in the docstrings:

* ``B`` batch, ``C`` channels, ``T`` time steps (samples or frames),
* ``Fr`` frequency bins of a spectrogram.
"""

from __future__ import annotations

import copy
import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "pad1d",
    "spectro",
    "ispectro",
    "ScaledEmbedding",
    "HEncLayer",
    "HDecLayer",
    "MultiWrap",
    "DConv",
    "LayerScale",
    "LocalState",
    "BLSTM",
]


# ---------------------------------------------------------------------------
# Padding and short-time Fourier transforms
# ---------------------------------------------------------------------------


def pad1d(
    x: torch.Tensor,
    paddings: tp.Tuple[int, int],
    mode: str = "constant",
    value: float = 0.0,
) -> torch.Tensor:
    """Pad the last axis of ``x`` like ``F.pad``, tolerating short inputs in reflect mode.

    ``F.pad(mode='reflect')`` needs the padding to be smaller than the signal.
    When it is not, zeros are first appended (mostly on the right) so that the
    reflection becomes possible; the original samples stay at
    ``out[..., left:left + length]``.

    Args:
        x: tensor ``(..., T)``.
        paddings: ``(left, right)`` number of samples to add.
        mode: any ``F.pad`` mode.
        value: fill value for ``mode='constant'``.

    Returns:
        tensor ``(..., left + T + right)``.
    """
    left, right = paddings
    if mode == "reflect":
        length = x.shape[-1]
        widest = max(left, right)
        if length <= widest:
            missing = widest - length + 1
            zeros_right = min(right, missing)
            zeros_left = missing - zeros_right
            x = F.pad(x, (zeros_left, zeros_right))
            left -= zeros_left
            right -= zeros_right
    return F.pad(x, (left, right), mode, value)


def spectro(x: torch.Tensor, n_fft: int = 512, hop_length: tp.Optional[int] = None,
            pad: int = 0) -> torch.Tensor:
    """Complex STFT of the last axis (hann window, ``normalized=True``, centred).

    Args:
        x: real tensor ``(..., T)``.
        n_fft: window length.
        hop_length: hop between frames, ``n_fft // 4`` by default.
        pad: zero-padding factor of the FFT, the FFT size is ``n_fft * (1 + pad)``.

    Returns:
        complex tensor ``(..., n_fft * (1 + pad) // 2 + 1, frames)`` with
        ``frames = T // hop_length + 1``.
    """
    *leading, length = x.shape
    flat = x.reshape(-1, length)
    device = flat.device
    if device.type in ("mps", "xpu"):  # no complex support there
        flat = flat.cpu()
    window = torch.hann_window(n_fft, dtype=flat.dtype, device=flat.device)
    spec = torch.stft(
        flat,
        n_fft * (1 + pad),
        hop_length or n_fft // 4,
        window=window,
        win_length=n_fft,
        normalized=True,
        center=True,
        return_complex=True,
        pad_mode="reflect",
    )
    return spec.view(*leading, spec.shape[-2], spec.shape[-1])


def ispectro(z: torch.Tensor, hop_length: tp.Optional[int] = None,
             length: tp.Optional[int] = None, pad: int = 0) -> torch.Tensor:
    """Inverse of :func:`spectro`.

    Args:
        z: complex tensor ``(..., freqs, frames)``; the FFT size is ``2 * freqs - 2``.
        hop_length: hop between frames (``None``: a quarter of the window).
        length: exact number of output samples wanted (``None``: as torch decides).
        pad: zero-padding factor used by :func:`spectro`.

    Returns:
        real tensor ``(..., length)``.
    """
    *leading, freqs, frames = z.shape
    n_fft = 2 * freqs - 2
    win_length = n_fft // (1 + pad)
    flat = z.reshape(-1, freqs, frames)
    if flat.device.type in ("mps", "xpu"):
        flat = flat.cpu()
    window = torch.hann_window(win_length, dtype=flat.real.dtype, device=flat.device)
    signal = torch.istft(
        flat,
        n_fft,
        hop_length,
        window=window,
        win_length=win_length,
        normalized=True,
        length=length,
        center=True,
    )
    return signal.view(*leading, signal.shape[-1])


# ---------------------------------------------------------------------------
# Small modules
# ---------------------------------------------------------------------------


class LayerScale(nn.Module):
    """Per-channel learnt scaling of a residual branch (Touvron et al. 2021).

    ``channel_last=False``: input ``(B, C, T)``; ``channel_last=True``: input ``(..., C)``.
    """

    def __init__(self, channels: int, init: float = 0, channel_last: bool = False) -> None:
        super().__init__()
        self.channel_last = channel_last
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale ``x`` channel-wise; same shape out."""
        if self.channel_last:
            return x * self.scale
        return x * self.scale[:, None]


class ScaledEmbedding(nn.Module):
    """Embedding table whose output is multiplied by ``scale``.

    The stored table holds ``weight / scale`` (a learning-rate trick of demucs);
    ``smooth`` only affected the initialisation and is accepted for compatibility.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 scale: float = 10.0, smooth: bool = False) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        self.scale = scale

    @property
    def weight(self) -> torch.Tensor:
        """Effective table ``(num_embeddings, embedding_dim)``."""
        return self.embedding.weight * self.scale

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Look up ``indices`` (any integer shape ``S``) -> ``(*S, embedding_dim)``."""
        return self.embedding(indices) * self.scale


class BLSTM(nn.Module):
    """Bidirectional LSTM over time followed by a linear map back to ``dim`` channels.

    When ``max_steps`` is set and the input is longer, the sequence is cut into
    windows of ``max_steps`` steps overlapping by half, each window is processed
    independently, and the central part of every window is kept.
    """

    def __init__(self, dim: int, layers: int = 1, max_steps: tp.Optional[int] = None,
                 skip: bool = False) -> None:
        super().__init__()
        if max_steps is not None and max_steps % 4 != 0:
            raise ValueError("max_steps must be a multiple of 4")
        self.max_steps = max_steps
        self.lstm = nn.LSTM(bidirectional=True, num_layers=layers, hidden_size=dim, input_size=dim)
        self.linear = nn.Linear(2 * dim, dim)
        self.skip = skip

    def _run(self, seq: torch.Tensor) -> torch.Tensor:
        """``(T, N, C)`` -> ``(T, N, C)``: LSTM then linear projection."""
        return self.linear(self.lstm(seq)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, T)``."""
        batch, channels, steps = x.shape
        width = self.max_steps
        if width is None or steps <= width:
            out = self._run(x.permute(2, 0, 1)).permute(1, 2, 0)
        else:
            hop = width // 2
            n_windows = math.ceil(steps / hop)
            padded = F.pad(x, (0, (n_windows - 1) * hop + width - steps))
            windows = padded.unfold(-1, width, hop)  # (B, C, W, width)
            seq = windows.permute(3, 0, 2, 1).reshape(width, batch * n_windows, channels)
            res = self._run(seq).view(width, batch, n_windows, channels)
            res = res.permute(1, 3, 2, 0)  # (B, C, W, width)
            margin = hop // 2
            # Window k covers [k * hop, k * hop + width); keep its centre
            # [margin, width - margin), plus the left margin of the first window.
            # The right margin of the last window is always beyond `steps`.
            centre = res[..., margin:width - margin].reshape(batch, channels, n_windows * hop)
            out = torch.cat([res[:, :, 0, :margin], centre], dim=-1)[..., :steps]
        if self.skip:
            out = out + x
        return out


class LocalState(nn.Module):
    """Multi-head self-attention over time with a learnt distance penalty.

    There is no positional embedding: ``query_decay`` predicts, per head and per
    query, how fast attention decays with the distance ``|t - s|``.  A position
    never attends to itself.
    """

    def __init__(self, channels: int, heads: int = 4, nfreqs: int = 0, ndecay: int = 4) -> None:
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.nfreqs = nfreqs
        self.ndecay = ndecay
        self.content = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        if nfreqs:
            self.query_freqs = nn.Conv1d(channels, heads * nfreqs, 1)
        if ndecay:
            self.query_decay = nn.Conv1d(channels, heads * ndecay, 1)
        self.proj = nn.Conv1d(channels + heads * nfreqs, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, T)`` (residual included)."""
        batch, channels, steps = x.shape
        heads = self.heads
        positions = torch.arange(steps, device=x.device, dtype=x.dtype)
        delta = positions[:, None] - positions[None, :]  # (T keys, T queries)

        queries = self.query(x).view(batch, heads, -1, steps)
        keys = self.key(x).view(batch, heads, -1, steps)
        # scores[b, h, t, s]: key t against query s; softmax runs over keys.
        scores = torch.matmul(keys.transpose(2, 3), queries)
        scores = scores / math.sqrt(keys.shape[2])

        if self.nfreqs:
            periods = torch.arange(1, self.nfreqs + 1, device=x.device, dtype=x.dtype)
            freq_kernel = torch.cos(2 * math.pi * delta / periods.view(-1, 1, 1))  # (f, t, s)
            freq_q = self.query_freqs(x).view(batch, heads, -1, steps) / math.sqrt(self.nfreqs)
            scores = scores + torch.einsum("fts,bhfs->bhts", freq_kernel, freq_q)
        if self.ndecay:
            # sum_f -(f+1) |t-s| q_f[s] / sqrt(ndecay)
            #     == -|t-s| * (sum_f (f+1) q_f[s]) / sqrt(ndecay)
            rates = torch.arange(1, self.ndecay + 1, device=x.device, dtype=x.dtype)
            decay_q = torch.sigmoid(self.query_decay(x).view(batch, heads, -1, steps)) / 2
            rate = torch.matmul(rates, decay_q) / math.sqrt(self.ndecay)  # (B, h, S)
            scores = scores - delta.abs() * rate[:, :, None, :]

        eye = torch.eye(steps, device=x.device, dtype=torch.bool)
        scores = scores.masked_fill(eye, -100.0)
        weights = torch.softmax(scores, dim=2)

        content = self.content(x).view(batch, heads, -1, steps)
        result = torch.matmul(content, weights)  # (B, h, c, S)
        if self.nfreqs:
            time_sig = torch.einsum("bhts,fts->bhfs", weights, freq_kernel)
            result = torch.cat([result, time_sig], 2)
        result = result.reshape(batch, -1, steps)
        return x + self.proj(result)


def _is_pointwise_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a plain 1x1 ``nn.Conv1d`` (groups 1, stride 1, no padding)."""
    return (isinstance(module, nn.Conv1d) and module.kernel_size == (1,)
            and module.stride == (1,) and module.padding == (0,) and module.groups == 1)


def pointwise_conv1d(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Apply the 1x1 ``conv`` to ``x`` ``(B, Cin, T)`` as a batched matrix product.

    Same result as ``conv(x)`` (to float rounding, ~1e-7 relative), computed as
    ``bias + weight @ x[b]`` for every ``b`` with one ``torch.baddbmm``.  On CPU
    this is much faster than ``F.conv1d`` (mkldnn) for the many short sequences
    the frequency branch of HTDemucs feeds its ``DConv`` (``B`` = batch x
    frequency bands).  Measured single-threaded (torch 2.13, CPU):
    ``(512, 6, 336) -> (512, 96, 336)``: ~72 ms -> ~36 ms, and
    ``(128, 12, 336) -> (128, 192, 336)``: ~22 ms -> ~7 ms.  For ``B == 1``
    (one long sequence) there is no gain, so :class:`DConv` only uses this for
    ``B > 1``, in the DConvs with a BLSTM or LocalState (the others run
    :meth:`DConv.forward_bands`).
    """
    weight = conv.weight.squeeze(-1)  # (Cout, Cin)
    weight = weight.expand(x.shape[0], *weight.shape)  # (B, Cout, Cin), no copy
    if conv.bias is None:
        return torch.bmm(weight, x)
    return torch.baddbmm(conv.bias[:, None], weight, x)  # bias broadcast to (B, Cout, T)


class DConv(nn.Module):
    """Stack of residual branches (dilated conv, optional BLSTM/attention, 1x1 conv + GLU).

    Each branch ``layers[d]`` is an ``nn.Sequential`` laid out as
    ``[conv k, norm, act, (BLSTM), (LocalState), conv 1x1, norm, GLU, LayerScale]``
    and is applied as ``x = x + branch(x)``.  On CPU, a DConv without BLSTM or
    LocalState runs :meth:`forward_bands` (a 1-d input is one band); with them and a
    batch ``B > 1``, the 1x1 conv is evaluated with :func:`pointwise_conv1d`. Both
    give the same result to float rounding; the modules, and so the ``state_dict``
    keys, are unchanged.
    """

    def __init__(self, channels: int, compress: float = 4, depth: int = 2, init: float = 1e-4,
                 norm: bool = True, attn: bool = False, heads: int = 4, ndecay: int = 4,
                 lstm: bool = False, gelu: bool = True, kernel: int = 3,
                 dilate: bool = True) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError("kernel must be odd")
        self.channels = channels
        self.compress = compress
        self.depth = abs(depth)
        dilated = depth > 0  # as in demucs, the sign of `depth` decides (not `dilate`)
        hidden = int(channels / compress)

        def make_norm(dim: int) -> nn.Module:
            return nn.GroupNorm(1, dim) if norm else nn.Identity()

        self.layers = nn.ModuleList()
        for index in range(self.depth):
            dilation = 2 ** index if dilated else 1
            branch: tp.List[nn.Module] = [
                nn.Conv1d(channels, hidden, kernel, dilation=dilation,
                          padding=dilation * (kernel // 2)),
                make_norm(hidden),
                nn.GELU() if gelu else nn.ReLU(),
            ]
            if lstm:
                branch.append(BLSTM(hidden, layers=2, max_steps=200, skip=True))
            if attn:
                branch.append(LocalState(hidden, heads=heads, ndecay=ndecay))
            branch += [
                nn.Conv1d(hidden, 2 * channels, 1),
                make_norm(2 * channels),
                nn.GLU(1),
                LayerScale(channels, init),
            ]
            self.layers.append(nn.Sequential(*branch))

        #: Every branch is conv, norm, activation, 1x1 conv, norm, GLU, scale: the CPU
        #: path of :meth:`forward_bands` applies.
        self.banded = not (lstm or attn)

    def runs_banded(self, x: torch.Tensor) -> bool:
        """Whether ``x`` goes through :meth:`forward_bands` (on the CPU, when :attr:`banded`)."""
        return self.banded and x.device.type == "cpu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, T)``."""
        if self.runs_banded(x):
            return self.forward_bands(x[:, :, None])[:, :, 0]
        if x.shape[0] == 1 or x.device.type != "cpu":
            for branch in self.layers:
                x = x + branch(x)
            return x
        for branch in self.layers:
            y = x
            for module in branch:
                y = pointwise_conv1d(y, module) if _is_pointwise_conv1d(module) else module(y)
            x = x + y
        return x

    def forward_bands(self, x: torch.Tensor) -> torch.Tensor:
        """The DConv along time of every frequency band of ``x`` ``(B, C, Fr, T)``, in that
        layout (only when :attr:`banded`).

        Same maths as :meth:`forward` on ``(B * Fr, C, T)``, without the two transposing
        copies: the dilated conv is a ``(1, k)`` conv2d (bitwise the same), the 1x1 conv one
        matrix product over the columns, each one-group GroupNorm takes its statistics per
        band and folds its affine part into one multiply-add, and the residual sums are
        multiply-adds in place after the first.
        """
        for index, branch in enumerate(self.layers):
            conv, norm1, activation, pointwise, norm2, _glu, layer_scale = branch
            y = F.conv2d(x, conv.weight[:, :, None], conv.bias, padding=(0, conv.padding[0]),
                         dilation=(1, conv.dilation[0]))
            y = activation(_norm_per_band(y, norm1))
            batch, hidden, freqs, steps = y.shape
            # The 1x1 conv without its bias, which the norm adds in its centring pass.
            weight = pointwise.weight[:, :, 0].expand(batch, -1, -1)  # no copy
            y = torch.bmm(weight, y.reshape(batch, hidden, freqs * steps))
            y = F.glu(_norm_per_band(y.view(batch, -1, freqs, steps), norm2, pointwise.bias), 1)
            scale = layer_scale.scale[:, None, None]
            x = torch.addcmul(x, y, scale) if index == 0 else x.addcmul_(y, scale)
        return x


def _norm_per_band(y: torch.Tensor, norm: nn.Module,
                   bias: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """A one-group ``nn.GroupNorm`` (or identity) of every band of ``y + bias``, where ``y``
    is ``(B, C, Fr, T)`` and ``bias`` ``(C,)`` (or None): statistics over ``(C, T)`` per
    ``(B, Fr)``.

    Two passes (the mean from sums, then the variance of the centred values from norms
    along time), which are 1.1-4x faster here than ``var_mean`` over two strided axes;
    the bias is added in the centring pass, and ``y`` (a temporary of the caller's) is
    centred and normalised in place.
    """
    if not isinstance(norm, nn.GroupNorm):
        return y if bias is None else y + bias[:, None, None]
    count = y.shape[1] * y.shape[3]
    mean = y.sum(3, keepdim=True).sum(1, keepdim=True).div_(count)  # (B, 1, Fr, 1)
    if bias is not None:  # the mean of y + bias, less the bias: (B, C, Fr, 1)
        mean = (mean + bias.mean()) - bias[:, None, None]
    centred = y.sub_(mean)
    var = _sum_of_squares_along_time(centred).sum(1, keepdim=True)
    scale = var.div_(count).add_(norm.eps).rsqrt_()
    if not norm.affine:
        return centred.mul_(scale)
    return centred.mul_(scale * norm.weight[:, None, None]).add_(norm.bias[:, None, None])


NORM_BLOCK = 8192
"""Samples per float32 norm in ``_sum_of_squares_along_time``."""


def _sum_of_squares_along_time(x: torch.Tensor) -> torch.Tensor:
    """``(x ** 2).sum(3, keepdim=True)`` of a (B, C, Fr, T) tensor, from float32 norms of
    ``NORM_BLOCK``-sample blocks added up. One norm over a long time axis (DrumSep's 40 s
    chunks: 441,000 samples) accumulates about 1e-5 relative error; blocks keep it near
    2e-7 at under twice the (small) cost. Up to one block, a single norm as before."""
    steps = x.shape[3]
    if steps <= NORM_BLOCK:
        return torch.linalg.vector_norm(x, dim=3, keepdim=True).square_()
    whole = steps - steps % NORM_BLOCK
    blocks = x[..., :whole].unflatten(3, (-1, NORM_BLOCK))
    total = torch.linalg.vector_norm(blocks, dim=4).square_().sum(3, keepdim=True)
    if whole < steps:
        total += torch.linalg.vector_norm(x[..., whole:], dim=3, keepdim=True).square_()
    return total


def _apply_dconv_per_band(dconv: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Run a 1-d ``dconv`` along time on every frequency band of ``y`` ``(B, C, Fr, T)``."""
    if isinstance(dconv, DConv) and dconv.runs_banded(y):
        return dconv.forward_bands(y)
    batch, channels, freqs, steps = y.shape
    flat = y.permute(0, 2, 1, 3).reshape(batch * freqs, channels, steps)
    flat = dconv(flat)
    return flat.view(batch, freqs, channels, steps).permute(0, 2, 1, 3)


# ---------------------------------------------------------------------------
# Hybrid encoder / decoder layers
# ---------------------------------------------------------------------------


class HEncLayer(nn.Module):
    """Encoder layer of the hybrid models, for the frequency or the time branch.

    ``conv`` (stride ``stride``) -> GroupNorm -> GELU -> optional ``DConv`` ->
    optional 1x1 ``rewrite`` conv + GroupNorm + GLU.  With ``freq=True`` the
    convolutions are 2-d with kernel ``(kernel_size, 1)`` acting on the
    frequency axis of ``(B, C, Fr, T)``; otherwise 1-d on ``(B, C, T)``.

    Args:
        chin, chout: input / output channels.
        kernel_size, stride: of the main convolution.
        norm_groups: groups of the GroupNorms (when ``norm``).
        empty: only build and apply the first convolution (used just before the
            time and frequency branches merge).
        freq: acts on the frequency axis.
        dconv: insert a ``DConv`` residual branch built with ``dconv_kw``.
        norm: use GroupNorm (otherwise identity).
        context: context of the ``rewrite`` conv (kernel ``1 + 2 * context``).
        dconv_kw: keyword arguments for ``DConv``.
        pad: pad by ``kernel_size // 4`` so the output is ``input / stride``.
        rewrite: add the 1x1 conv + GLU at the end.
    """

    def __init__(self, chin: int, chout: int, kernel_size: int = 8, stride: int = 4,
                 norm_groups: int = 1, empty: bool = False, freq: bool = True,
                 dconv: bool = True, norm: bool = True, context: int = 0,
                 dconv_kw: tp.Mapping[str, tp.Any] = {},  # noqa: B006 (never mutated)
                 pad: bool = True, rewrite: bool = True) -> None:
        super().__init__()
        padding = kernel_size // 4 if pad else 0
        self.freq = freq
        self.kernel_size = kernel_size
        self.stride = stride
        self.empty = empty
        self.norm = norm
        self.pad = padding

        def make_norm(dim: int) -> nn.Module:
            return nn.GroupNorm(norm_groups, dim) if norm else nn.Identity()

        if freq:
            self.conv: nn.Module = nn.Conv2d(chin, chout, (kernel_size, 1), (stride, 1),
                                             (padding, 0))
        else:
            self.conv = nn.Conv1d(chin, chout, kernel_size, stride, padding)
        if empty:
            return
        self.norm1 = make_norm(chout)
        self.rewrite: tp.Optional[nn.Module] = None
        if rewrite:
            conv_cls = nn.Conv2d if freq else nn.Conv1d
            self.rewrite = conv_cls(chout, 2 * chout, 1 + 2 * context, 1, context)
            self.norm2 = make_norm(2 * chout)
        self.dconv: tp.Optional[DConv] = None
        if dconv:
            self.dconv = DConv(chout, **dconv_kw)

    def forward(self, x: torch.Tensor, inject: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode.

        Args:
            x: ``(B, C, Fr, T)`` for a frequency layer; ``(B, C, T)`` for a time
                layer (a 4-d input is then flattened to ``(B, C * Fr, T)``).
            inject: time-branch output added after the first conv, ``(B, chout, T')``
                or ``(B, chout, Fr', T')``.

        Returns:
            ``(B, chout, Fr / stride, T)`` or ``(B, chout, ceil(T / stride))``.
        """
        if not self.freq:
            if x.dim() == 4:
                x = x.reshape(x.shape[0], -1, x.shape[-1])
            remainder = x.shape[-1] % self.stride
            if remainder:
                x = F.pad(x, (0, self.stride - remainder))
        y = self.conv(x)
        if self.empty:
            return y
        if inject is not None:
            if inject.shape[-1] != y.shape[-1]:
                raise RuntimeError(f"cannot inject {tuple(inject.shape)} into {tuple(y.shape)}")
            if inject.dim() == 3 and y.dim() == 4:
                inject = inject[:, :, None]
            y = y + inject
        y = F.gelu(self.norm1(y))
        if self.dconv is not None:
            y = _apply_dconv_per_band(self.dconv, y) if self.freq else self.dconv(y)
        if self.rewrite is not None:
            y = F.glu(self.norm2(self.rewrite(y)), dim=1)
        return y


class HDecLayer(nn.Module):
    """Decoder layer of the hybrid models (mirror of :class:`HEncLayer`).

    ``x + skip`` -> optional ``rewrite`` conv + GroupNorm + GLU -> optional
    ``DConv`` -> transposed ``conv_tr`` -> GroupNorm -> padding removal ->
    GELU (except for the ``last`` layer).

    Args are those of :class:`HEncLayer`, plus ``last`` (no final GELU) and
    ``context_freq`` (the ``rewrite`` context also spans frequencies; when
    False its kernel is ``(1, 1 + 2 * context)``, along time only).
    """

    def __init__(self, chin: int, chout: int, last: bool = False, kernel_size: int = 8,
                 stride: int = 4, norm_groups: int = 1, empty: bool = False, freq: bool = True,
                 dconv: bool = True, norm: bool = True, context: int = 1,
                 dconv_kw: tp.Mapping[str, tp.Any] = {},  # noqa: B006 (never mutated)
                 pad: bool = True, context_freq: bool = True, rewrite: bool = True) -> None:
        super().__init__()
        self.pad = kernel_size // 4 if pad else 0
        self.last = last
        self.freq = freq
        self.chin = chin
        self.empty = empty
        self.stride = stride
        self.kernel_size = kernel_size
        self.norm = norm
        self.context_freq = context_freq

        def make_norm(dim: int) -> nn.Module:
            return nn.GroupNorm(norm_groups, dim) if norm else nn.Identity()

        if freq:
            self.conv_tr: nn.Module = nn.ConvTranspose2d(chin, chout, (kernel_size, 1),
                                                         (stride, 1))
        else:
            self.conv_tr = nn.ConvTranspose1d(chin, chout, kernel_size, stride)
        self.norm2 = make_norm(chout)
        if empty:
            return
        self.rewrite: tp.Optional[nn.Module] = None
        if rewrite:
            if not freq:
                self.rewrite = nn.Conv1d(chin, 2 * chin, 1 + 2 * context, 1, context)
            elif context_freq:
                self.rewrite = nn.Conv2d(chin, 2 * chin, 1 + 2 * context, 1, context)
            else:
                self.rewrite = nn.Conv2d(chin, 2 * chin, (1, 1 + 2 * context), 1, (0, context))
            self.norm1 = make_norm(2 * chin)
        self.dconv: tp.Optional[DConv] = None
        if dconv:
            self.dconv = DConv(chin, **dconv_kw)

    def decode(self, x: torch.Tensor, skip: tp.Optional[torch.Tensor],
               length: tp.Optional[int], activate: bool) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, with the final GELU controlled by ``activate``."""
        if self.freq and x.dim() == 3:
            x = x.view(x.shape[0], self.chin, -1, x.shape[-1])
        if self.empty:
            if skip is not None:
                raise RuntimeError("an empty decoder layer takes no skip connection")
            y = x
        else:
            y = x + skip
            if self.rewrite is not None:
                y = F.glu(self.norm1(self.rewrite(y)), dim=1)
            if self.dconv is not None:
                y = _apply_dconv_per_band(self.dconv, y) if self.freq else self.dconv(y)
        z = self.norm2(self.conv_tr(y))
        if self.freq:
            if self.pad:
                z = z[..., self.pad:-self.pad, :]
        else:
            z = z[..., self.pad:self.pad + length]
            if z.shape[-1] != length:
                raise RuntimeError(f"decoder output too short: {z.shape[-1]} < {length}")
        if activate:
            z = F.gelu(z)
        return z, y

    def forward(self, x: torch.Tensor, skip: tp.Optional[torch.Tensor],
                length: tp.Optional[int]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Decode.

        Args:
            x: ``(B, chin, Fr, T)`` (or ``(B, chin * Fr, T)``, reshaped) for a
                frequency layer, ``(B, chin, T)`` for a time layer.
            skip: encoder output of the same shape as ``x``; ``None`` if ``empty``.
            length: time length to crop to (time layers only).

        Returns:
            ``(z, y)``: ``z`` the output ``(B, chout, Fr * stride, T)`` or
            ``(B, chout, length)``, and ``y`` the tensor that entered ``conv_tr``.
        """
        return self.decode(x, skip, length, activate=not self.last)


class MultiWrap(nn.Module):
    """Replicate an encoder/decoder frequency layer over several frequency bands.

    ``split_ratios`` (increasing, in ``(0, 1)``) cut the frequency axis into
    ``len(split_ratios) + 1`` bands, each with its own copy of ``layer`` (in
    ``layers``).  Bands are cut so that, with identical weights, the result
    equals applying ``layer`` on the whole axis.  ``layer`` must be a
    frequency layer without normalisation and with padding.
    """

    def __init__(self, layer: nn.Module, split_ratios: tp.Sequence[float]) -> None:
        super().__init__()
        if not isinstance(layer, (HEncLayer, HDecLayer)):
            raise TypeError("MultiWrap wraps HEncLayer or HDecLayer")
        if layer.norm or not layer.freq or not layer.pad:
            raise ValueError("MultiWrap needs a padded frequency layer without norm")
        self.split_ratios = split_ratios
        self.conv = isinstance(layer, HEncLayer)
        if not self.conv and layer.context_freq:
            raise ValueError("MultiWrap decoder layers need context_freq=False")
        self.layers = nn.ModuleList()
        for _ in range(len(split_ratios) + 1):
            band_layer = copy.deepcopy(layer)
            if self.conv:
                band_layer.conv.padding = (0, 0)  # padding is done by hand on the band edges
            else:
                band_layer.pad = 0  # overlap-add of the bands is done by hand
            self.layers.append(band_layer)

    def forward(self, x: torch.Tensor, skip: tp.Optional[torch.Tensor] = None,
                length: tp.Optional[int] = None):
        """Apply the per-band layers.

        Encoder: ``x`` ``(B, C, Fr, T)`` -> ``(B, C', Fr / stride, T)``.
        Decoder: ``(x, skip)`` ``(B, C, Fr, T)`` -> ``((B, C', Fr * stride, T), None)``.
        """
        if self.conv:
            return self._encode(x)
        return self._decode(x, skip)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        freqs = x.shape[2]
        ratios = list(self.split_ratios) + [1]
        start = 0
        outs = []
        for ratio, layer in zip(ratios, self.layers):
            kernel, stride = layer.kernel_size, layer.stride
            pad = kernel // 4
            if ratio == 1:
                limit = freqs
            else:
                # Choose `limit` so that this band yields a whole number of
                # frames, the first one aligned with the padded full layer.
                limit = int(round(freqs * ratio))
                span = limit - start + (pad if start == 0 else 0)
                frames = round((span - kernel) / stride + 1)
                limit = start + (frames - 1) * stride + kernel - (pad if start == 0 else 0)
            if not 0 < limit - start or limit > freqs:
                raise RuntimeError(f"bad frequency band [{start}, {limit}) of {freqs}")
            band = x[:, :, start:limit, :]
            band = F.pad(band, (0, 0, pad if start == 0 else 0, pad if ratio == 1 else 0))
            outs.append(layer(band))
            start = limit - kernel + stride
        return torch.cat(outs, dim=2)

    def _decode(self, x: torch.Tensor, skip: torch.Tensor) -> tp.Tuple[torch.Tensor, None]:
        freqs = x.shape[2]
        ratios = list(self.split_ratios) + [1]
        start = 0
        outs: tp.List[torch.Tensor] = []
        for ratio, layer in zip(ratios, self.layers):
            limit = freqs if ratio == 1 else int(round(freqs * ratio))
            stride = layer.stride
            out, _ = layer.decode(x[:, :, start:limit], skip[:, :, start:limit], None,
                                  activate=False)
            if outs:
                # Overlap-add the first `stride` rows onto the previous band
                # (its bias was already counted there).
                bias = layer.conv_tr.bias.view(1, -1, 1, 1)
                outs[-1][:, :, -stride:] += out[:, :, :stride] - bias
                out = out[:, :, stride:]
            if ratio == 1:
                out = out[:, :, :(-stride) // 2, :]  # floor division, as in demucs
            if start == 0:
                out = out[:, :, stride // 2:, :]
            outs.append(out)
            start = limit
        out = torch.cat(outs, dim=2)
        if not self.layers[-1].last:
            out = F.gelu(out)
        return out, None
