"""Building blocks shared by the Band-Split RoFormer and the Mel-Band RoFormer.

The maths and the module tree follow ZFTurbo's Music-Source-Separation-Training
(``models/bs_roformer/``), so published ``.ckpt`` state dicts load with ``strict=True``:
every parameter sits under the same key, including the rotary ``freqs`` that the time (and
the frequency) transformers of all layers share.

Inference-only, written for speed on CPU without changing results beyond float reassociation:

- The residual stream keeps one layout, (batch, time, bands, dim), for the whole stack. Only
  attention needs its tokens grouped; the time transformer folds the bands into SDPA's head
  axis ((b, t, f*h, e) viewed as (b, f*h, t, e)), the frequency transformer folds time into
  the batch axis. No transposes between the axial transformers.
- Layers update the residual stream in place and write their intermediates into one set of
  scratch buffers (``Workspace``) reused by every layer: fresh tensors of this size are
  mmap'd and page-faulted on each allocation, which costs as much as the elementwise work.
- Rotary embeddings: interleaved pairs are complex numbers, so the rotation is one complex
  multiply (bitwise the same as ``x * cos + rotate_half(x) * sin``); the cos/sin table is
  built once per sequence length and cached.
- Attention is ``torch.nn.functional.scaled_dot_product_attention``.
- Reduced precision (``set_compute_dtype``, for ``--precision bf16|fp16``): the
  transformers' linears hold 16-bit weights and their activations (normed inputs, queries,
  keys, values, gates, the feed-forward's hidden layer, attention) are 16-bit; the residual
  stream, the norms' statistics and gains, the rotation's arithmetic (one rounding), the band
  split, the mask estimators and the STFTs stay float32.
- The mask estimators' hidden layers (the same shape in every band) run as one batched
  matmul over the bands, from stacked weights that are the parameters' own storage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cpu_kernels import linear

# Config keys (ZFTurbo / audio-separator constructor arguments and keys found in published
# configs) that change nothing at inference: dropout, attention kernel choices, gradient
# checkpointing, the training loss, and an argument nothing reads.
INFERENCE_IGNORED_KEYS: frozenset[str] = frozenset(
    {
        "attn_dropout",
        "ff_dropout",
        "flash_attn",
        "sage_attention",
        "use_torch_checkpoint",
        "dim_freqs_in",
        "multi_stft_resolution_loss_weight",
        "multi_stft_resolutions_window_sizes",
        "multi_stft_hop_size",
        "multi_stft_normalized",
        "multi_stft_window_fn",
    }
)

# Keys that change the network in a way not implemented here, with the only accepted value.
UNSUPPORTED_KEYS: dict[str, object] = {"use_pope": False}

# Which axis of (batch, time, bands, dim) an attention layer attends along.
TIME = "time"
FREQ = "freq"
ALL = "all"  # the linear-attention transformer: over every (time, band) token

_FF_MULT = 4  # ZFTurbo's Transformer never passes ff_mult
_FF_ROWS = 8192  # feed-forward rows per chunk: bounds the hidden buffer at 8192 x 4 dim
_NORM_ROWS = 8192  # rows normed at a time into a 16-bit output


class Workspace:
    """Scratch buffers for one forward pass, by name and dtype (``dtype`` unless a request
    names another); a request gets a view of the first ``prod(shape)`` elements, so smaller
    requests reuse a larger buffer."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.device = device
        self.dtype = dtype
        self._buffers: dict[tuple[str, torch.dtype], Tensor] = {}

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        key = (name, dtype or self.dtype)
        numel = math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, device=self.device, dtype=key[1])
            self._buffers[key] = buffer
        return buffer[:numel].view(*shape)


def check_shared_options(*, dim_head: int, use_pope: bool) -> None:
    if use_pope:
        raise ValueError("use_pope=True (PoPE positional embeddings) is not supported")
    if dim_head % 2:
        raise ValueError(f"dim_head must be even for the rotary embedding, got {dim_head}")


def hidden_width(dim: int, mlp_expansion_factor: float) -> int:
    width = dim * mlp_expansion_factor
    if int(width) != width:
        raise ValueError(f"dim * mlp_expansion_factor must be a whole number, got {width}")
    return int(width)


class RMSNorm(nn.Module):
    """``F.normalize(x) * sqrt(dim) * gamma``, the same operations in the same order."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """``out`` may be 16-bit for a float32 ``x`` (rows, dim): then the same float32
        arithmetic runs a block of rows at a time, each block rounded once into ``out``
        (PyTorch's mixed-dtype elementwise kernels are 2-4x slower than a float32 op and
        a conversion)."""
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12)
        if out is None or out.dtype == x.dtype:
            out = torch.div(x, norm, out=out)
            return out.mul_(self.scale).mul_(self.gamma)
        for start in range(0, x.shape[0], _NORM_ROWS):
            rows = slice(start, start + _NORM_ROWS)
            out[rows].copy_(torch.div(x[rows], norm[rows]).mul_(self.scale).mul_(self.gamma))
        return out


class RotaryEmbedding(nn.Module):
    """rotary-embedding-torch's ``RotaryEmbedding(dim)`` for inference: ``freqs`` is a
    parameter (it is in the checkpoints), the rotation table is cached per length."""

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        exponents = torch.arange(0, dim, 2)[: dim // 2].float() / dim
        self.freqs = nn.Parameter(1.0 / (theta**exponents), requires_grad=False)
        self._tables: dict[tuple[int, torch.device], Tensor] = {}
        self._tables_for: tuple[int, int] | None = None

    def rotation(self, length: int, device: torch.device) -> Tensor:
        """exp(i * position * freq) as complex64, shape (length, dim // 2)."""
        freqs = self.freqs
        stamp = (freqs.data_ptr(), freqs._version)
        if stamp != self._tables_for:  # new weights were loaded
            self._tables.clear()
            self._tables_for = stamp
        key = (length, device)
        table = self._tables.get(key)
        if table is None:
            with torch.no_grad():
                freqs = freqs.detach().to(device=device, dtype=torch.float32)
                positions = torch.arange(length, device=device, dtype=torch.float32)
                # As rotary-embedding-torch: angles repeated per pair, cos and sin of the
                # full (length, dim) table, so each value is computed exactly as there.
                angles = (positions[:, None] * freqs).repeat_interleave(2, dim=-1)
                table = torch.complex(angles.cos()[:, 0::2], angles.sin()[:, 0::2])
            self._tables[key] = table
        return table


_ROTATION_CHUNK = 1 << 20  # values rotated at a time in 16 bits: bounds the float32 copy


def rotate_pairs(t: Tensor, rotation: Tensor) -> None:
    """Rotates the interleaved (re, im) pairs of ``t`` (batch, n, ..., e) in place by the
    complex64 ``rotation`` (broadcast against (batch, n, ..., e // 2)). Float32 ``t``: one
    complex multiply, bitwise rotary-embedding-torch's result. 16-bit ``t`` (no complex
    type): the same multiply on a float32 copy, rounded back once, a slice of axis 1 at a
    time (so that the copy stays small)."""
    if t.dtype == torch.float32:
        torch.view_as_complex(t.view(*t.shape[:-1], t.shape[-1] // 2, 2)).mul_(rotation)
        return
    rotation = rotation.expand(*t.shape[:-1], t.shape[-1] // 2)
    step = max(1, _ROTATION_CHUNK * t.shape[1] // max(1, t.numel()))
    for start in range(0, t.shape[1], step):
        part = t[:, start : start + step]
        widened = part.float()
        rotate_pairs(widened, rotation[:, start : start + step])
        part.copy_(widened)


def _attention_views(t: Tensor, shape: tuple[int, int, int, int, int], axis: str) -> Tensor:
    """(tokens, heads * e) in (b, t, f) token order, as SDPA's (batch, heads, seq, e)."""
    b, n_t, n_f, h, e = shape
    if axis == TIME:  # sequences along time: the bands join the heads
        return t.view(b, n_t, n_f * h, e).transpose(1, 2)
    return t.view(b * n_t, n_f, h, e).transpose(1, 2)  # along bands: time joins the batch


class Attention(nn.Module):
    """Pre-norm multi-head attention with rotary positions and a sigmoid gate per head."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary_embed: RotaryEmbedding) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.rotary_embed = rotary_embed  # shared by every layer of one axis
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.ModuleList([nn.Linear(heads * dim_head, dim, bias=False)])

    def forward(self, x: Tensor, ws: Workspace, axis: str) -> None:
        """Adds attention(x) to ``x`` (batch, time, bands, dim) in place."""
        b, n_t, n_f, dim = x.shape
        h, e = self.heads, self.dim_head
        inner = h * e
        tokens = b * n_t * n_f
        x2 = x.view(tokens, dim)

        weight = self.to_qkv.weight
        xn = self.norm(x2, out=ws.get("norm", (tokens, dim), weight.dtype))
        q = linear(xn, weight[:inner])
        k = linear(xn, weight[inner : 2 * inner])
        v = linear(xn, weight[2 * inner :])
        gates = torch.addmm(self.to_gates.bias, xn, self.to_gates.weight.t()).sigmoid_()

        if axis == TIME:
            rotation = self.rotary_embed.rotation(n_t, x.device).view(n_t, 1, 1, e // 2)
        else:
            rotation = self.rotary_embed.rotation(n_f, x.device).view(n_f, 1, e // 2)
        for t in (q, k):
            rotate_pairs(t.view(b, n_t, n_f, h, e), rotation)

        shape = (b, n_t, n_f, h, e)
        out = F.scaled_dot_product_attention(
            _attention_views(q, shape, axis),
            _attention_views(k, shape, axis),
            _attention_views(v, shape, axis),
        )
        del q, k, v  # their memory takes the output projection below
        # SDPA's CPU kernels lay their output out as (batch, seq, heads, e): back to tokens.
        out = out.transpose(1, 2)
        if not out.is_contiguous():
            out = out.contiguous()
        out = out.view(tokens, h, e).mul_(gates.unsqueeze(-1))
        x2.add_(linear(out.view(tokens, inner), self.to_out[0].weight))


class LinearAttention(nn.Module):
    """Cross-covariance ("linear") attention of El-Nouby et al.: softmax over the dim_head
    features, every token a feature; queries and keys l2-normalised along the tokens."""

    def __init__(self, dim: int, heads: int, dim_head: int, scale: float = 8.0) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.scale = scale
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.ModuleList([nn.Linear(dim, 3 * heads * dim_head, bias=False)])
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.ModuleList([nn.Identity(), nn.Linear(heads * dim_head, dim, bias=False)])

    def forward(self, x: Tensor, ws: Workspace, axis: str) -> None:
        b, dim = x.shape[0], x.shape[-1]
        h, e = self.heads, self.dim_head
        x3 = x.view(b, -1, dim)
        n = x3.shape[1]
        weight = self.to_qkv[0].weight
        xn = self.norm(x3, out=ws.get("norm", x3.shape, weight.dtype))
        qkv = F.linear(xn, weight).view(b, n, 3, h, e).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)  # each (b, h, e, n)
        q = F.normalize(q, dim=-1) * self.temperature.exp().to(q.dtype)
        k = F.normalize(k, dim=-1)
        attn = (torch.matmul(q, k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        out = torch.matmul(attn, v)  # (b, h, e, n)
        out = out.permute(0, 3, 1, 2).reshape(b, n, h * e)
        x3.add_(F.linear(out, self.to_out[1].weight))


class FeedForward(nn.Module):
    """RMSNorm -> Linear -> GELU -> Linear (keys net.0, net.1, net.4 as ZFTurbo's)."""

    def __init__(self, dim: int, mult: float = _FF_MULT) -> None:
        super().__init__()
        inner = int(dim * mult)
        # Identity stands where ZFTurbo has a Dropout, to keep the indices of the keys.
        self.net = nn.ModuleList(
            [RMSNorm(dim), nn.Linear(dim, inner), nn.GELU(), nn.Identity(), nn.Linear(inner, dim)]
        )

    def forward(self, x2: Tensor, ws: Workspace) -> None:
        """Adds ff(x2) to the token rows ``x2`` (tokens, dim) in place, a chunk at a time."""
        norm, first, _, _, second = self.net
        dim = first.in_features
        for start in range(0, x2.shape[0], _FF_ROWS):
            rows = x2[start : start + _FF_ROWS]
            n = rows.shape[0]
            xn = norm(rows, out=ws.get("norm", (n, dim), first.weight.dtype))
            hidden = linear(xn, first.weight, first.bias, gelu=True)
            rows.add_(linear(hidden, second.weight, second.bias))


class Transformer(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        dim_head: int,
        heads: int,
        norm_output: bool,
        rotary_embed: RotaryEmbedding | None = None,
        linear_attn: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            if linear_attn:
                attn: nn.Module = LinearAttention(dim, heads, dim_head)
            else:
                assert rotary_embed is not None
                attn = Attention(dim, heads, dim_head, rotary_embed)
            self.layers.append(nn.ModuleList([attn, FeedForward(dim)]))
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: Tensor, ws: Workspace, axis: str) -> None:
        """Runs on ``x`` (batch, time, bands, dim) in place."""
        x2 = x.view(-1, x.shape[-1])
        for attn, ff in self.layers:
            attn(x, ws, axis)
            ff(x2, ws)
        if isinstance(self.norm, RMSNorm):
            self.norm(x2, out=x2)


def build_layers(
    *,
    dim: int,
    depth: int,
    dim_head: int,
    heads: int,
    time_transformer_depth: int,
    freq_transformer_depth: int,
    linear_transformer_depth: int,
    norm_output: bool,
) -> nn.ModuleList:
    """``depth`` blocks of [linear transformer,] time transformer, frequency transformer;
    one RotaryEmbedding for all time transformers and one for all frequency ones."""
    time_rotary = RotaryEmbedding(dim_head)
    freq_rotary = RotaryEmbedding(dim_head)
    common = dict(dim=dim, dim_head=dim_head, heads=heads, norm_output=norm_output)
    layers = nn.ModuleList()
    for _ in range(depth):
        block = []
        if linear_transformer_depth > 0:
            block.append(Transformer(depth=linear_transformer_depth, linear_attn=True, **common))
        block.append(Transformer(depth=time_transformer_depth, rotary_embed=time_rotary, **common))
        block.append(Transformer(depth=freq_transformer_depth, rotary_embed=freq_rotary, **common))
        layers.append(nn.ModuleList(block))
    return layers


def run_layers(layers: nn.ModuleList, x: Tensor, skip_connection: bool) -> Tensor:
    """The axial transformer stack over ``x`` (batch, time, bands, dim), in place.

    With ``skip_connection`` (ZFTurbo), each block first adds the outputs of all earlier
    blocks, after its linear transformer and before its time transformer."""
    ws = Workspace(x.device, x.dtype)
    earlier: list[Tensor] = []
    for block in layers:
        if len(block) == 3:
            block[0](x, ws, ALL)
        time_transformer, freq_transformer = block[-2], block[-1]
        if skip_connection:
            for previous in earlier:
                x.add_(previous)
        time_transformer(x, ws, TIME)
        freq_transformer(x, ws, FREQ)
        if skip_connection:
            earlier.append(x.clone())
    return x


class BandSplit(nn.Module):
    """Per band: RMSNorm and Linear from its (freq, channel, re/im) values to ``dim``."""

    def __init__(self, dim: int, dim_inputs: Sequence[int]) -> None:
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(d), nn.Linear(d, dim)) for d in self.dim_inputs
        )

    def forward(self, x: Tensor) -> Tensor:
        """(batch, time, sum(dim_inputs)) -> (batch, time, bands, dim)."""
        b, n_t, _ = x.shape
        x2 = x.reshape(b * n_t, -1)
        outs = []
        for part, (norm, linear) in zip(x2.split(self.dim_inputs, dim=-1), self.to_features):
            outs.append(torch.addmm(linear.bias, norm(part), linear.weight.t()))
        return torch.stack(outs, dim=1).view(b, n_t, len(outs), -1)


class MaskEstimator(nn.Module):
    """Per band: an MLP (Linear, Tanh, ..., Linear) from ``dim`` to twice the band's width,
    then a GLU. ``num_hidden`` hidden layers of ``dim_hidden`` (BS-RoFormer passes
    mask_estimator_depth - 1, Mel-Band RoFormer mask_estimator_depth).

    The hidden layers have the same shape in every band, so they run as one batched matmul
    over the bands. For that, each hidden layer's per-band weights and biases are views into
    one stacked tensor (the parameters keep their keys and shapes; loading a state dict
    copies into the views). Anything that gives the parameters new storage (``.to()``,
    ``load_state_dict(assign=True)``, deepcopy) is noticed and the stack rebuilt."""

    def __init__(
        self, dim: int, dim_inputs: Sequence[int], num_hidden: int, dim_hidden: int
    ) -> None:
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        self.num_hidden = max(num_hidden, 0)
        self.to_freqs = nn.ModuleList()
        for dim_in in self.dim_inputs:
            widths = (dim, *((dim_hidden,) * self.num_hidden), dim_in * 2)
            mlp: list[nn.Module] = []
            for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
                mlp.append(nn.Linear(width_in, width_out))
                if index < len(widths) - 2:
                    mlp.append(nn.Tanh())
            self.to_freqs.append(nn.Sequential(nn.Sequential(*mlp), nn.GLU(dim=-1)))
        self._stacks: list[tuple[Tensor, Tensor]] = []
        self._stacked_hidden_layers()

    def _hidden_linears(self, layer: int) -> list[nn.Linear]:
        return [mlp[2 * layer] for mlp, _ in self.to_freqs]

    def _stacked_hidden_layers(self) -> list[tuple[Tensor, Tensor]]:
        """(weights (bands, out, in), biases (bands, 1, out)) per hidden layer, the storage
        of the per-band parameters."""
        if len(self._stacks) == self.num_hidden and all(
            linear.weight.data_ptr() == weight[band].data_ptr()
            and linear.bias.data_ptr() == bias[band].data_ptr()
            for layer, (weight, bias) in enumerate(self._stacks)
            for band, linear in enumerate(self._hidden_linears(layer))
        ):
            return self._stacks
        stacks = []
        with torch.no_grad():
            for layer in range(self.num_hidden):
                linears = self._hidden_linears(layer)
                weight = torch.stack([linear.weight.detach() for linear in linears])
                bias = torch.stack([linear.bias.detach() for linear in linears]).unsqueeze(1)
                for band, linear in enumerate(linears):
                    linear.weight.data = weight[band]
                    linear.bias.data = bias[band, 0]
                stacks.append((weight, bias))
        self._stacks = stacks
        return stacks

    def forward(self, x: Tensor, out: Tensor) -> Tensor:
        """x (batch, time, bands, dim) -> ``out`` (batch * time, sum(dim_inputs))."""
        b, n_t, n_bands, dim = x.shape
        h = x.view(b * n_t, n_bands, dim).transpose(0, 1)  # (bands, batch * time, dim)
        for weight, bias in self._stacked_hidden_layers():
            h = torch.baddbmm(bias, h, weight.transpose(1, 2)).tanh_()
        outs = []
        for band, (mlp, _) in enumerate(self.to_freqs):
            last = mlp[-1]
            outs.append(F.glu(torch.addmm(last.bias, h[band], last.weight.t()), dim=-1))
        return torch.cat(outs, dim=-1, out=out)


class SpectralCodec(nn.Module):
    """The STFT and its inverse, as ZFTurbo's networks take them (periodic Hann window of
    win_length, centred, reflect padding)."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int, normalized: bool) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.normalized = normalized
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    @property
    def num_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def stft(self, audio: Tensor) -> Tensor:
        """(n, time) -> complex (n, freqs, frames)."""
        return torch.stft(
            audio,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            normalized=self.normalized,
            return_complex=True,
        )

    def istft(self, spec: Tensor, length: int | None) -> Tensor:
        return torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            normalized=self.normalized,
            length=length,
        )


def check_mix(mix: Tensor, channels: int) -> Tensor:
    if mix.ndim != 3 or mix.shape[1] != channels:
        raise ValueError(f"expected mix of shape (batch, {channels}, time), got {tuple(mix.shape)}")
    return mix if mix.dtype == torch.float32 else mix.float()


def band_split_input(spec: Tensor, batch: int, channels: int) -> Tensor:
    """complex (batch * channels, freqs, frames) -> real (batch, frames, freqs * channels, 2):
    ZFTurbo's ``b s f t c -> b t (f s) c``."""
    _, n_freqs, n_frames = spec.shape
    real = torch.view_as_real(spec).view(batch, channels, n_freqs, n_frames, 2)
    return real.permute(0, 3, 2, 1, 4).reshape(batch, n_frames, n_freqs * channels, 2)


def apply_masks(spec: Tensor, masks: Tensor, batch: int, channels: int, zero_dc: bool) -> Tensor:
    """spec complex (batch * channels, freqs, frames); masks real (stems, batch * frames,
    freqs * channels * 2) in ZFTurbo's ``t (f s c)`` order. Returns the masked spectrogram,
    complex (batch * stems * channels, freqs, frames), with bin 0 zeroed if ``zero_dc``."""
    _, n_freqs, n_frames = spec.shape
    n_stems = masks.shape[0]
    mask = torch.view_as_complex(masks.view(n_stems, batch, n_frames, n_freqs, channels, 2))
    mask = mask.permute(1, 0, 4, 3, 2)  # (batch, stems, channels, freqs, frames)
    out = torch.empty(
        (batch, n_stems, channels, n_freqs, n_frames), dtype=spec.dtype, device=spec.device
    )
    torch.mul(spec.view(batch, 1, channels, n_freqs, n_frames), mask, out=out)
    if zero_dc:
        out[:, :, :, 0].zero_()
    return out.view(batch * n_stems * channels, n_freqs, n_frames)


class RoformerBase(nn.Module):
    """What the Band-Split and the Mel-Band RoFormer build and run alike: the transformer
    stack, the STFT codec, the band split and the per-stem mask estimators (the attribute
    names are ZFTurbo's, hence the state_dict keys). Subclasses choose the bands."""

    def __init__(self, *, dim: int, depth: int, stereo: bool, num_stems: int,
                 time_transformer_depth: int, freq_transformer_depth: int,
                 linear_transformer_depth: int, dim_head: int, heads: int, stft_n_fft: int,
                 stft_hop_length: int, stft_win_length: int, stft_normalized: bool,
                 zero_dc: bool, skip_connection: bool, use_pope: bool,
                 norm_output: bool) -> None:
        super().__init__()
        check_shared_options(dim_head=dim_head, use_pope=use_pope)
        self.stereo = stereo
        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.zero_dc = zero_dc
        self.skip_connection = skip_connection
        self.layers = build_layers(
            dim=dim, depth=depth, dim_head=dim_head, heads=heads,
            time_transformer_depth=time_transformer_depth,
            freq_transformer_depth=freq_transformer_depth,
            linear_transformer_depth=linear_transformer_depth, norm_output=norm_output,
        )
        self.codec = SpectralCodec(stft_n_fft, stft_hop_length, stft_win_length, stft_normalized)

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Run the transformers' linears and attention in ``dtype`` (bfloat16 or float16),
        for ``--precision``: their weights converted once, here (load the weights first).
        The residual stream, the norms, the band split, the mask estimators and the STFTs
        stay float32."""
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                module.to(dtype)

    def build_bands(self, dim: int, dim_inputs: tuple[int, ...], hidden_layers: int,
                    mlp_expansion_factor: float) -> None:
        """The band split for bands of ``dim_inputs`` values, and one mask MLP per stem."""
        self.band_split = BandSplit(dim, dim_inputs)
        dim_hidden = hidden_width(dim, mlp_expansion_factor)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, dim_inputs, hidden_layers, dim_hidden)
            for _ in range(self.num_stems)
        )

    def spectrum(self, mix: Tensor) -> tuple[Tensor, int, int, int]:
        """The checked mix's STFT, with its batch, channels and length."""
        mix = check_mix(mix, self.audio_channels)
        batch, channels, length = mix.shape
        return self.codec.stft(mix.reshape(batch * channels, length)), batch, channels, length

    def estimate_masks(self, x: Tensor, width: int) -> Tensor:
        """(stems, batch * frames, width): every stem's mask MLP on the stack's output."""
        masks = x.new_empty((self.num_stems, x.shape[0] * x.shape[1], width))
        for stem, estimator in enumerate(self.mask_estimators):
            estimator(x, out=masks[stem])
        return masks
