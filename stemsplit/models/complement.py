"""A network that estimates one stem, with its complement: the mixture minus that stem."""

from __future__ import annotations

import torch


class WithComplement(torch.nn.Module):
    """(batch, channels, n) -> (batch, 2, channels, n): the network's one stem, then the
    mixture minus it. The wrapped network returns (batch, 1, channels, n)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        stem = self.network(mix)
        return torch.cat([stem, mix[:, None, :, : stem.shape[-1]] - stem], dim=1)
