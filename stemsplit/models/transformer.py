"""Cross-domain transformer used at the bottom of Hybrid Transformer Demucs.

The bottleneck of HTDemucs holds two sequences of feature vectors: one from the
spectrogram branch (every (time frame, frequency bin) pair is a token) and one from
the waveform branch (every time step is a token). :class:`CrossTransformerEncoder`
runs them through alternating layers: *self* layers where each sequence attends to
itself, and *cross* layers where each sequence attends to the other one.

Everything here is inference-only and written for the ``batch first`` layout the
published checkpoints were trained with: token sequences are ``(batch, tokens,
channels)``. Module and parameter names reproduce the ones of the checkpoints
(``layers.{i}.self_attn.in_proj_weight``, ``layers_t.{i}.gamma_1.scale`` ...), so a
published ``state_dict`` loads with ``strict=True``.
"""

from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError
from .cpu_kernels import linear

__all__ = [
    "CrossTransformerEncoder",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "MultiHeadAttention",
    "ChannelLastGroupNorm",
    "ChannelLastLayerScale",
    "LearnedPositionEmbedding",
    "sin_embedding_1d",
    "sin_embedding_2d",
    "cape_embedding_1d",
]


# --------------------------------------------------------------------------------------
# Positional embeddings
# --------------------------------------------------------------------------------------


def _sin_cos_of_positions(
    positions: torch.Tensor, dim: int, max_period: float
) -> torch.Tensor:
    """Concatenated ``[cos, sin]`` features of 1D positions.

    Args:
        positions: ``(length,)`` integer or float positions.
        dim: number of output features (even).
        max_period: the longest wavelength.

    Returns:
        ``(length, dim)`` float32: feature ``j < dim/2`` is ``cos(p / max_period **
        (j / (dim/2 - 1)))`` and feature ``dim/2 + j`` the matching sine.
    """
    half = dim // 2
    exponents = torch.arange(half, device=positions.device) / (half - 1)
    phase = positions[:, None] / (max_period ** exponents)[None, :]
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


def sin_embedding_1d(
    length: int,
    dim: int,
    shift: int = 0,
    device: tp.Union[str, torch.device] = "cpu",
    max_period: float = 10000.0,
) -> torch.Tensor:
    """Sinusoidal embedding of the positions ``shift .. shift + length - 1``.

    Returns:
        ``(length, dim)`` float32 (cosines in the first half of the features).
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dimension, got {dim}")
    positions = shift + torch.arange(length, device=device)
    return _sin_cos_of_positions(positions, dim, max_period)


def cape_embedding_1d(
    length: int,
    dim: int,
    mean_normalize: bool = True,
    device: tp.Union[str, torch.device] = "cpu",
    max_period: float = 10000.0,
) -> torch.Tensor:
    """CAPE embedding at inference time (no augmentation).

    Same as :func:`sin_embedding_1d` with float positions ``0 .. length-1``, centred
    on zero when ``mean_normalize`` is true (https://arxiv.org/abs/2106.03143).

    Returns:
        ``(length, dim)`` float32.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dimension, got {dim}")
    positions = torch.arange(length, dtype=torch.float32)
    if mean_normalize:
        positions = positions - positions.mean()
    return _sin_cos_of_positions(positions.to(device), dim, max_period).float()


def sin_embedding_2d(
    dim: int,
    height: int,
    width: int,
    device: tp.Union[str, torch.device] = "cpu",
    max_period: float = 10000.0,
) -> torch.Tensor:
    """2D sinusoidal embedding for a ``height x width`` grid, channels last.

    The first ``dim/2`` channels encode the width position (column), the last
    ``dim/2`` the height position (row); within each half, even channels hold sines
    and odd channels cosines of geometrically spaced frequencies.

    Returns:
        ``(width, height, dim)`` float32, i.e. indexed ``[column, row, channel]``:
        flattening the first two axes gives the token order of the spectrogram
        branch (time-major, frequency-minor).
    """
    if dim % 4:
        raise ValueError(
            f"2D sinusoidal embedding needs a dimension divisible by 4, got {dim}"
        )
    half = dim // 2
    inv_wavelength = torch.exp(
        torch.arange(0.0, half, 2) * -(math.log(max_period) / half)
    )

    def interleaved(count: int) -> torch.Tensor:
        """``(count, half)``: sin/cos pairs of positions ``0 .. count-1``."""
        phase = torch.arange(0.0, count)[:, None] * inv_wavelength[None, :]
        return torch.stack([torch.sin(phase), torch.cos(phase)], dim=-1).reshape(
            count, half
        )

    emb = torch.empty(width, height, dim)
    emb[:, :, :half] = interleaved(width)[:, None, :]
    emb[:, :, half:] = interleaved(height)[None, :, :]
    return emb.to(device)


class LearnedPositionEmbedding(nn.Module):
    """Table of learned position vectors, multiplied by a constant ``boost``.

    Parameter: ``embedding.weight`` of shape ``(max_positions, dim)``.
    """

    def __init__(self, max_positions: int, dim: int, boost: float = 3.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_positions, dim)
        self.boost = boost

    def forward(self, length: int) -> torch.Tensor:
        """Returns ``(length, dim)``: the vectors of positions ``0 .. length-1``."""
        return self.embedding.weight[:length] * self.boost


# --------------------------------------------------------------------------------------
# Small building blocks
# --------------------------------------------------------------------------------------


class ChannelLastGroupNorm(nn.GroupNorm):
    """Group norm over a channels-last token sequence.

    Statistics are taken, per batch item and per group of channels, over all tokens
    and all channels of the group; with one group, over the whole ``(tokens,
    channels)`` plane. Parameters ``weight`` and ``bias`` of shape ``(channels,)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, tokens, channels)`` -> same shape."""
        batch, tokens, channels = x.shape
        groups = self.num_groups
        if groups == 1:
            # One fused kernel: a layer norm over the whole (tokens, channels) plane.
            normed = F.layer_norm(x, (tokens, channels), eps=self.eps)
        else:
            grouped = x.reshape(batch, tokens, groups, channels // groups)
            var, mean = torch.var_mean(grouped, dim=(1, 3), unbiased=False, keepdim=True)
            normed = (grouped - mean) * torch.rsqrt(var + self.eps)
            normed = normed.reshape(batch, tokens, channels)
        if self.affine:
            normed = torch.addcmul(self.bias, normed, self.weight)
        return normed


class ChannelLastLayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (Touvron et al. 2021).

    Parameter ``scale`` of shape ``(channels,)``; applies to ``(..., channels)``.
    """

    def __init__(self, channels: int, init: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., channels)`` -> same shape."""
        return self.scale * x


def _add_residual(x: torch.Tensor, branch: torch.Tensor, gamma: nn.Module) -> torch.Tensor:
    """``x + gamma(branch)``, fused into one kernel when ``gamma`` is a layer scale."""
    if isinstance(gamma, ChannelLastLayerScale):
        return torch.addcmul(x, branch, gamma.scale)
    return x + gamma(branch)


def _make_layer_scale(enabled: bool, dim: int, init: float) -> nn.Module:
    """A :class:`ChannelLastLayerScale`, or an identity (no parameter) if disabled."""
    return ChannelLastLayerScale(dim, init) if enabled else nn.Identity()


def _make_norm(group_norm: int, dim: int, eps: float) -> nn.Module:
    """Layer norm over channels, or a channels-last group norm if ``group_norm``."""
    if group_norm:
        return ChannelLastGroupNorm(int(group_norm), dim, eps=eps)
    return nn.LayerNorm(dim, eps=eps)


def _make_norm_out(
    norm_first: tp.Union[bool, int], norm_out: tp.Union[bool, int], dim: int
) -> tp.Optional[ChannelLastGroupNorm]:
    """The group norm closing a pre-norm layer, with ``norm_out`` groups.

    The checkpoints were built with a bitwise test ``norm_first & norm_out``, so an
    even ``norm_out`` (e.g. 2) means *no* output norm; we reproduce that exactly.
    """
    if int(norm_first) & int(norm_out):
        return ChannelLastGroupNorm(int(norm_out), dim)
    return None


def _activation(activation: tp.Union[str, tp.Callable]) -> tp.Callable:
    if callable(activation):
        return activation
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise ModelError(f"unknown transformer activation {activation!r}")


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with packed input projections.

    Parameters (same layout as ``torch.nn.MultiheadAttention``): ``in_proj_weight``
    ``(3*dim, dim)`` and ``in_proj_bias`` ``(3*dim,)`` stacking the query, key and
    value projections, and ``out_proj`` (a ``dim -> dim`` linear layer).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelError(
                f"transformer width {dim} is not divisible by {num_heads} heads"
            )
        self.dim = dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _split_heads(self, x: torch.Tensor, parts: int) -> tp.Tuple[torch.Tensor, ...]:
        """``(batch, tokens, parts*dim)`` -> ``parts`` views ``(batch, heads, tokens,
        dim/heads)``."""
        batch, tokens, _ = x.shape
        x = x.view(batch, tokens, parts, self.num_heads, self.dim // self.num_heads)
        return x.permute(2, 0, 3, 1, 4).unbind(0)

    def forward(
        self, query: torch.Tensor, context: tp.Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Attention of ``query`` tokens over ``context`` tokens (self-attention if
        ``context`` is None).

        Args:
            query: ``(batch, tokens_q, dim)``.
            context: ``(batch, tokens_kv, dim)`` or None.

        Returns:
            ``(batch, tokens_q, dim)``.
        """
        batch, tokens_q, dim = query.shape
        if context is None:
            packed = linear(query, self.in_proj_weight, self.in_proj_bias)
            q, k, v = self._split_heads(packed, 3)
        else:
            (q,) = self._split_heads(
                linear(query, self.in_proj_weight[:dim], self.in_proj_bias[:dim]), 1
            )
            k, v = self._split_heads(
                linear(context, self.in_proj_weight[dim:], self.in_proj_bias[dim:]), 2
            )
        out = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, tokens_q, head_dim)
        out = out.transpose(1, 2).reshape(batch, tokens_q, dim)
        return linear(out, self.out_proj.weight, self.out_proj.bias)


class _FeedForwardMixin:
    """Shared two-layer perceptron ``linear2(activation(linear1(x)))``."""

    linear1: nn.Linear
    linear2: nn.Linear
    activation: tp.Callable

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, dim)`` -> ``(batch, tokens, dim)``."""
        if self.activation is F.gelu:  # one oneDNN pass on the CPU
            hidden = linear(x, self.linear1.weight, self.linear1.bias, gelu=True)
        else:
            hidden = self.activation(linear(x, self.linear1.weight, self.linear1.bias))
        return linear(hidden, self.linear2.weight, self.linear2.bias)


def _check_not_sparse(sparse: bool) -> None:
    if sparse:
        raise ModelError("sparse attention is not supported")


class SelfAttentionLayer(_FeedForwardMixin, nn.Module):
    """Transformer encoder layer where a sequence attends to itself.

    Parameters: ``self_attn`` (:class:`MultiHeadAttention`), ``linear1``, ``linear2``
    (feed-forward), ``norm1``, ``norm2``, optional ``norm_out`` (one-group norm after
    the layer, only with ``norm_first``), ``gamma_1`` and ``gamma_2`` (layer scales, or
    identities). Dropout arguments are accepted and ignored (inference only).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: tp.Union[str, tp.Callable] = F.relu,
        group_norm: int = 0,
        norm_first: bool = False,
        norm_out: bool = False,
        layer_norm_eps: float = 1e-5,
        layer_scale: bool = False,
        init_values: float = 1e-4,
        sparse: bool = False,
        **_unused: tp.Any,
    ) -> None:
        super().__init__()
        _check_not_sparse(sparse)
        self.norm_first = bool(norm_first)
        self.self_attn = MultiHeadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = _make_norm(group_norm, d_model, layer_norm_eps)
        self.norm2 = _make_norm(group_norm, d_model, layer_norm_eps)
        self.norm_out = _make_norm_out(norm_first, norm_out, d_model)
        self.gamma_1 = _make_layer_scale(layer_scale, d_model, init_values)
        self.gamma_2 = _make_layer_scale(layer_scale, d_model, init_values)
        self.activation = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, tokens, d_model)`` -> same shape."""
        if self.norm_first:
            x = _add_residual(x, self.self_attn(self.norm1(x)), self.gamma_1)
            x = _add_residual(x, self._feed_forward(self.norm2(x)), self.gamma_2)
            if self.norm_out is not None:
                x = self.norm_out(x)
        else:
            x = self.norm1(_add_residual(x, self.self_attn(x), self.gamma_1))
            x = self.norm2(_add_residual(x, self._feed_forward(x), self.gamma_2))
        return x


class CrossAttentionLayer(_FeedForwardMixin, nn.Module):
    """Transformer layer where one sequence attends to another one.

    Parameters: ``cross_attn`` (:class:`MultiHeadAttention`), ``linear1``, ``linear2``,
    ``norm1`` (queries), ``norm2`` (keys/values), ``norm3`` (before the feed-forward;
    unused unless ``norm_first``), optional ``norm_out``, ``gamma_1``, ``gamma_2``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: tp.Union[str, tp.Callable] = F.relu,
        layer_norm_eps: float = 1e-5,
        layer_scale: bool = False,
        init_values: float = 1e-4,
        norm_first: bool = False,
        group_norm: int = 0,
        norm_out: bool = False,
        sparse: bool = False,
        **_unused: tp.Any,
    ) -> None:
        super().__init__()
        _check_not_sparse(sparse)
        self.norm_first = bool(norm_first)
        self.cross_attn = MultiHeadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = _make_norm(group_norm, d_model, layer_norm_eps)
        self.norm2 = _make_norm(group_norm, d_model, layer_norm_eps)
        self.norm3 = _make_norm(group_norm, d_model, layer_norm_eps)
        self.norm_out = _make_norm_out(norm_first, norm_out, d_model)
        self.gamma_1 = _make_layer_scale(layer_scale, d_model, init_values)
        self.gamma_2 = _make_layer_scale(layer_scale, d_model, init_values)
        self.activation = _activation(activation)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``(batch, tokens, d_model)``, the queries.
            other: ``(batch, other_tokens, d_model)``, attended to.

        Returns:
            ``(batch, tokens, d_model)``.
        """
        if self.norm_first:
            attended = self.cross_attn(self.norm1(x), self.norm2(other))
            x = _add_residual(x, attended, self.gamma_1)
            x = _add_residual(x, self._feed_forward(self.norm3(x)), self.gamma_2)
            if self.norm_out is not None:
                x = self.norm_out(x)
        else:
            x = self.norm1(_add_residual(x, self.cross_attn(x, other), self.gamma_1))
            x = self.norm2(_add_residual(x, self._feed_forward(x), self.gamma_2))
        return x


# --------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------


class CrossTransformerEncoder(nn.Module):
    """Two parallel transformers (spectrogram ``layers``, waveform ``layers_t``) that
    alternate self-attention layers and cross-attention layers between the branches.

    With ``cross_first`` false, layers 0, 2, 4 ... are self-attention and 1, 3 ... cross;
    with ``cross_first`` true it is the other way round.

    The constructor takes the same arguments as the one the checkpoints were made
    with. Training-only ones (dropout, weight decay, learning rate, CAPE augmentation)
    are accepted and have no effect. ``sin_random_shift`` is ignored too: demucs draws
    a random shift of the sine positions even at inference, the published models have
    it at 0, and we always use 0. Sparse attention is refused with
    :class:`~stemsplit.errors.ModelError`.
    """

    def __init__(
        self,
        dim: int,
        emb: str = "sin",
        hidden_scale: float = 4.0,
        num_heads: int = 8,
        num_layers: int = 6,
        cross_first: bool = False,
        dropout: float = 0.0,
        max_positions: int = 1000,
        norm_in: bool = True,
        norm_in_group: bool = False,
        group_norm: int = False,
        norm_first: bool = False,
        norm_out: bool = False,
        max_period: float = 10000.0,
        weight_decay: float = 0.0,
        lr: tp.Optional[float] = None,
        layer_scale: bool = False,
        gelu: bool = True,
        sin_random_shift: int = 0,
        weight_pos_embed: float = 1.0,
        cape_mean_normalize: bool = True,
        cape_augment: bool = True,
        cape_glob_loc_scale: tp.Sequence[float] = (5000.0, 1.0, 1.4),
        sparse_self_attn: bool = False,
        sparse_cross_attn: bool = False,
        mask_type: str = "diag",
        mask_random_seed: int = 42,
        sparse_attn_window: int = 500,
        global_window: int = 50,
        auto_sparsity: bool = False,
        sparsity: float = 0.95,
    ) -> None:
        super().__init__()
        if sparse_self_attn or sparse_cross_attn:
            raise ModelError("sparse attention is not supported")
        if emb not in ("sin", "cape", "scaled"):
            raise ModelError(f"unknown transformer position embedding {emb!r}")
        self.num_layers = num_layers
        # Layer `idx` is a self-attention layer when idx % 2 == self_parity.
        self.self_parity = 1 if cross_first else 0
        self.emb = emb
        self.max_period = max_period
        self.weight_pos_embed = weight_pos_embed
        self.cape_mean_normalize = cape_mean_normalize
        if emb == "scaled":
            self.position_embeddings = LearnedPositionEmbedding(max_positions, dim)

        self.norm_in: nn.Module
        self.norm_in_t: nn.Module
        if norm_in:
            self.norm_in = nn.LayerNorm(dim)
            self.norm_in_t = nn.LayerNorm(dim)
        elif norm_in_group:
            self.norm_in = ChannelLastGroupNorm(int(norm_in_group), dim)
            self.norm_in_t = ChannelLastGroupNorm(int(norm_in_group), dim)
        else:
            self.norm_in = nn.Identity()
            self.norm_in_t = nn.Identity()

        layer_kwargs = dict(
            d_model=dim,
            nhead=num_heads,
            dim_feedforward=int(dim * hidden_scale),
            activation=F.gelu if gelu else F.relu,
            group_norm=group_norm,
            norm_first=norm_first,
            norm_out=norm_out,
            layer_scale=layer_scale,
        )
        self.layers = nn.ModuleList()  # spectrogram branch
        self.layers_t = nn.ModuleList()  # waveform branch
        for idx in range(num_layers):
            klass = SelfAttentionLayer if idx % 2 == self.self_parity else CrossAttentionLayer
            self.layers.append(klass(**layer_kwargs))
            self.layers_t.append(klass(**layer_kwargs))

    def forward(
        self, x: torch.Tensor, xt: torch.Tensor
    ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: spectrogram branch, ``(batch, dim, freqs, frames)``.
            xt: waveform branch, ``(batch, dim, steps)``.

        Returns:
            ``(x, xt)`` with the same shapes as the inputs.
        """
        batch, dim, freqs, frames = x.shape
        steps = xt.shape[-1]

        # Tokens in time-major, frequency-minor order: (batch, frames*freqs, dim).
        x = x.permute(0, 3, 2, 1).reshape(batch, frames * freqs, dim)
        pos_2d = sin_embedding_2d(dim, freqs, frames, x.device, self.max_period).to(x.dtype)
        x = self.norm_in(x) + self.weight_pos_embed * pos_2d.view(frames * freqs, dim)

        xt = xt.transpose(1, 2)  # (batch, steps, dim)
        pos_t = self._position_embedding_1d(steps, dim, x.device).to(x.dtype)
        xt = self.norm_in_t(xt) + self.weight_pos_embed * pos_t

        for idx in range(self.num_layers):
            if idx % 2 == self.self_parity:
                x = self.layers[idx](x)
                xt = self.layers_t[idx](xt)
            else:
                x, xt = self.layers[idx](x, xt), self.layers_t[idx](xt, x)

        x = x.view(batch, frames, freqs, dim).permute(0, 3, 2, 1)
        xt = xt.transpose(1, 2)
        return x, xt

    def _position_embedding_1d(
        self, length: int, dim: int, device: torch.device
    ) -> torch.Tensor:
        """``(length, dim)`` embedding of the waveform-branch positions."""
        if self.emb == "sin":
            return sin_embedding_1d(length, dim, device=device, max_period=self.max_period)
        if self.emb == "cape":
            return cape_embedding_1d(
                length,
                dim,
                mean_normalize=self.cape_mean_normalize,
                device=device,
                max_period=self.max_period,
            )
        available = self.position_embeddings.embedding.num_embeddings
        if length > available:
            raise ModelError(
                f"{length} time steps exceed the {available} learned transformer positions"
            )
        return self.position_embeddings(length)
