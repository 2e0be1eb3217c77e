"""SCNet-Tran: SCNet (``scnet.py``) with transformers in place of the separation network's
LSTMs, as ZFTurbo's Music-Source-Separation-Training defines it
(``models/scnet/scnet_tran.py``). Same constructor keywords, same state_dict keys.

What differs from SCNet:

* Each dual-path layer runs a transformer along the frequency rows and then one along the
  frames (``freq_layer``, ``time_layer``; each after a one-group GroupNorm, with a residual).
  A transformer is ``tran_depth`` blocks of pre-RMSNorm attention with rotary positions and
  a sigmoid gate per head, and a pre-RMSNorm GELU feed-forward of four times the width,
  then an output RMSNorm: the RoFormers' transformer (``roformer.Transformer``), whose
  module tree and keys are the same. One rotary table serves every frequency transformer,
  another every time transformer. A rotary dimension below ``tran_dim_head`` rotates the
  first ``tran_rotary_embedding_dim`` features of each head and leaves the rest, as
  rotary-embedding-torch does.
* ``first_conv`` (a 1x1 convolution) is in the state dict but the forward pass never uses
  it; it is built so that published checkpoints load strictly.
* ``expand`` and the dropout and flash-attention keywords change nothing at inference.

Model code never touches files, network or terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .roformer import FREQ, TIME, RotaryEmbedding, Transformer, Workspace
from .scnet import DEFAULT_SOURCES, SCNet, SeparationNet

__all__ = ["SCNetTran"]


class PartialRotaryEmbedding(RotaryEmbedding):
    """A rotary embedding of ``dim`` features in heads of ``head_dim``: the rotation of the
    features past ``dim`` is 1 (they pass unchanged)."""

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__(dim)
        self.pairs = head_dim // 2

    def rotation(self, length: int, device: torch.device) -> Tensor:
        table = super().rotation(length, device)
        missing = self.pairs - table.shape[-1]
        if missing == 0:
            return table
        return torch.cat([table, table.new_ones((length, missing))], dim=-1)


class DualPathTransformer(nn.Module):
    """A transformer along the rows, then one along the frames, each after a one-group
    GroupNorm and with a residual (ZFTurbo's ``DualPathTran``)."""

    def __init__(self, channels: int, time_rotary: RotaryEmbedding, freq_rotary: RotaryEmbedding,
                 depth: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, channels) for _ in range(2))
        self.time_layer = Transformer(dim=channels, depth=depth, dim_head=dim_head, heads=heads,
                                      norm_output=True, rotary_embed=time_rotary)
        self.freq_layer = Transformer(dim=channels, depth=depth, dim_head=dim_head, heads=heads,
                                      norm_output=True, rotary_embed=freq_rotary)

    def forward(self, x: Tensor) -> Tensor:
        """(b, c, rows, t) -> the same shape. The transformers take (batch, time, bands,
        dim) and run in place."""
        workspace = Workspace(x.device, x.dtype)
        tokens = self.norm_layers[0](x).permute(0, 3, 2, 1).contiguous()
        self.freq_layer(tokens, workspace, FREQ)
        x = x + tokens.permute(0, 3, 2, 1)
        tokens = self.norm_layers[1](x).permute(0, 3, 2, 1).contiguous()
        self.time_layer(tokens, workspace, TIME)
        return x + tokens.permute(0, 3, 2, 1)


class SCNetTran(SCNet):
    """ZFTurbo's ``models.scnet.scnet_tran.SCNet_Tran``. mix (batch, audio_channels, time) ->
    (batch, sources, audio_channels, time)."""

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
        tran_rotary_embedding_dim: int = 64,
        tran_depth: int = 1,
        tran_heads: int = 8,
        tran_dim_head: int = 64,
        tran_attn_dropout: float = 0.0,
        tran_ff_dropout: float = 0.0,
        tran_flash_attn: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        self._build(sources=sources, audio_channels=audio_channels, dims=dims, nfft=nfft,
                    hop_size=hop_size, win_size=win_size, normalized=normalized,
                    band_SR=band_SR, band_stride=band_stride, band_kernel=band_kernel,
                    conv_depths=conv_depths, compress=compress, conv_kernel=conv_kernel)
        if tran_dim_head < 2 or tran_dim_head % 2:
            raise ValueError(f"tran_dim_head must be even, not {tran_dim_head}")
        if not 2 <= tran_rotary_embedding_dim <= tran_dim_head:
            raise ValueError(f"tran_rotary_embedding_dim ({tran_rotary_embedding_dim}) must be "
                             f"between 2 and tran_dim_head ({tran_dim_head})")
        self.first_conv = nn.Conv2d(self.dims[0], self.dims[0], 1, bias=False)  # never used
        time_rotary = PartialRotaryEmbedding(tran_rotary_embedding_dim, tran_dim_head)
        freq_rotary = PartialRotaryEmbedding(tran_rotary_embedding_dim, tran_dim_head)
        self.separation_net = SeparationNet(
            self.dims[-1], num_dplayer,
            lambda channels: DualPathTransformer(channels, time_rotary, freq_rotary,
                                                 tran_depth, tran_heads, tran_dim_head))
