"""Building blocks of UVR's VR Architecture networks (both generations).

Shapes: (batch, channels, bins, frames). Attribute names follow the published state dicts
(``conv``, ``conv1``, ``bottleneck``, ...), so a ``.pth`` file loads with ``load_state_dict``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvBNActivation(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; ``depthwise``: a depthwise conv of
    ``nin`` channels, then a 1x1 conv to ``nout`` (the older nets' separable branches)."""

    def __init__(self, nin: int, nout: int, kernel: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, activation: type = nn.ReLU,
                 depthwise: bool = False) -> None:
        super().__init__()
        if depthwise:
            layers = [nn.Conv2d(nin, nin, kernel, stride, padding, dilation, groups=nin,
                                bias=False),
                      nn.Conv2d(nin, nout, 1, bias=False)]
        else:
            layers = [nn.Conv2d(nin, nout, kernel, stride, padding, dilation, bias=False)]
        self.conv = nn.Sequential(*layers, nn.BatchNorm2d(nout), activation())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def crop_frames(skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``skip`` cut to ``like``'s frame count, centred (a skip is never shorter)."""
    extra = skip.shape[3] - like.shape[3]
    if extra < 0:
        raise ValueError("a skip connection is shorter than the decoder's input: use a "
                         "longer window")
    start = extra // 2
    return skip[..., start : start + like.shape[3]] if extra else skip


def upsample_and_join(x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """x doubled in both axes (bilinear, corners aligned), the skip concatenated."""
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return x if skip is None else torch.cat([x, crop_frames(skip, x)], dim=1)


def frequency_branch(conv: nn.Module) -> nn.Sequential:
    """The ASPP's global branch: the mean over bins, then ``conv`` (its output is
    stretched back over the bins by the caller)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), conv)


def stretch(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)


def replicate_bins(mask: torch.Tensor, bins: int) -> torch.Tensor:
    """The mask's last bin repeated up to ``bins`` bins."""
    return F.pad(mask, (0, 0, 0, bins - mask.shape[2]), mode="replicate")
