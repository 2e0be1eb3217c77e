"""UVR's older VR networks (v5.0): a cascade of ASPP U-Nets over the magnitude spectrogram.

Input (batch, 2, bins + 1, frames) magnitudes divided by the track's maximum; output a mask
of the same shape in [0, 1]. Which variant a file holds follows from its size in KiB
(``ASPP_CAPACITY``): the channel widths, and how many ASPP branches (5, 6 with a fifth
encoder level, or 7).

The 7-branch trap: UVR builds the sixth and seventh branches as *one* module registered
under two names, so loading a state dict puts the seventh branch's weights in both; the
published files store the two apart. We keep both modules (so the files load strictly) and
run the seventh for both branches, which is what UVR computes.
"""

from __future__ import annotations

import torch
from torch import nn

from .vr_layers import ConvBNActivation, frequency_branch, replicate_bins, stretch, upsample_and_join

SIX_BRANCHES = (129605,)
SEVEN_BRANCHES = (33966, 537238, 537227)
ASPP_CAPACITY = {31191: 16, 33966: 16, 129605: 16, 123821: 32, 123812: 32,
                 537238: 64, 537227: 64}
"""File size (KiB, the nearest of UVR's list) -> the first stage's width."""
OFFSET = 128
"""Frames of context on each side of a window that the mask is not kept for."""


class _Encoder(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = ConvBNActivation(nin, nout, 3, 1, 1, activation=nn.LeakyReLU)
        self.conv2 = ConvBNActivation(nout, nout, 3, 2, 1, activation=nn.LeakyReLU)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv1(x)
        return self.conv2(skip), skip


class _Decoder(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv = ConvBNActivation(nin, nout, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(upsample_and_join(x, skip))


class _ASPP(nn.Module):
    def __init__(self, nin: int, nout: int, branches: int, dilations=(4, 8, 16)) -> None:
        super().__init__()
        self.branches = branches
        self.conv1 = frequency_branch(ConvBNActivation(nin, nin, 1, 1, 0))
        self.conv2 = ConvBNActivation(nin, nin, 1, 1, 0)
        self.conv3, self.conv4, self.conv5 = (
            ConvBNActivation(nin, nin, 3, 1, d, d, depthwise=True) for d in dilations)
        if branches >= 6:
            self.conv6 = ConvBNActivation(nin, nin, 3, 1, dilations[2], dilations[2],
                                          depthwise=True)
        if branches == 7:
            self.conv7 = ConvBNActivation(nin, nin, 3, 1, dilations[2], dilations[2],
                                          depthwise=True)
        self.bottleneck = nn.Sequential(ConvBNActivation(nin * branches, nout, 1, 1, 0),
                                        nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [stretch(self.conv1(x), x), self.conv2(x), self.conv3(x), self.conv4(x),
                    self.conv5(x)]
        if self.branches == 6:
            features.append(self.conv6(x))
        elif self.branches == 7:  # UVR's one shared module: the seventh branch, twice
            seventh = self.conv7(x)
            features += [seventh, seventh]
        return self.bottleneck(torch.cat(features, dim=1))


class _UNet(nn.Module):
    def __init__(self, nin: int, ch: int, branches: int, deep: bool) -> None:
        super().__init__()
        self.deep = deep
        self.enc1 = _Encoder(nin, ch)
        self.enc2 = _Encoder(ch, ch * 2)
        self.enc3 = _Encoder(ch * 2, ch * 4)
        self.enc4 = _Encoder(ch * 4, ch * 8)
        if deep:
            self.enc5 = _Encoder(ch * 8, ch * 16)
            self.aspp = _ASPP(ch * 16, ch * 32, branches)
            self.dec5 = _Decoder(ch * 48, ch * 16)
        else:
            self.aspp = _ASPP(ch * 8, ch * 16, branches)
        self.dec4 = _Decoder(ch * 24, ch * 8)
        self.dec3 = _Decoder(ch * 12, ch * 4)
        self.dec2 = _Decoder(ch * 6, ch * 2)
        self.dec1 = _Decoder(ch * 3, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skip1 = self.enc1(x)
        x, skip2 = self.enc2(x)
        x, skip3 = self.enc3(x)
        x, skip4 = self.enc4(x)
        if self.deep:
            x, skip5 = self.enc5(x)
            x = self.dec5(self.aspp(x), skip5)
        else:
            x = self.aspp(x)
        x = self.dec4(x, skip4)
        x = self.dec3(x, skip3)
        x = self.dec2(x, skip2)
        return self.dec1(x, skip1)


class ASPPCascade(nn.Module):
    """Three stages: low and high halves of the bins apart, then the full band twice, each
    stage seeing the input and the earlier stages' features."""

    offset = OFFSET

    def __init__(self, bins: int, size_kib: int) -> None:
        super().__init__()
        if size_kib not in ASPP_CAPACITY:
            raise ValueError(f"no older VR network has size {size_kib} KiB")
        ch = ASPP_CAPACITY[size_kib]
        branches = 6 if size_kib in SIX_BRANCHES else 7 if size_kib in SEVEN_BRANCHES else 5
        deep = size_kib in SIX_BRANCHES

        def unet(nin: int, width: int) -> _UNet:
            return _UNet(nin, width, branches, deep)

        self.stg1_low_band_net = unet(2, ch)
        self.stg1_high_band_net = unet(2, ch)
        self.stg2_bridge = ConvBNActivation(ch + 2, ch // 2, 1, 1, 0)
        self.stg2_full_band_net = unet(ch // 2, ch)
        self.stg3_bridge = ConvBNActivation(2 * ch + 2, ch, 1, 1, 0)
        self.stg3_full_band_net = unet(ch, 2 * ch)
        self.out = nn.Conv2d(2 * ch, 2, 1, bias=False)
        self.aux1_out = nn.Conv2d(ch, 2, 1, bias=False)  # training only
        self.aux2_out = nn.Conv2d(ch, 2, 1, bias=False)  # training only
        self.max_bin = bins
        self.output_bin = bins + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Magnitudes (batch, 2, bins + 1, frames) -> the mask, same shape."""
        x = x[:, :, : self.max_bin]
        half = x.shape[2] // 2
        aux1 = torch.cat([self.stg1_low_band_net(x[:, :, :half]),
                          self.stg1_high_band_net(x[:, :, half:])], dim=2)
        aux2 = self.stg2_full_band_net(self.stg2_bridge(torch.cat([x, aux1], dim=1)))
        h = self.stg3_full_band_net(self.stg3_bridge(torch.cat([x, aux1, aux2], dim=1)))
        return replicate_bins(torch.sigmoid(self.out(h)), self.output_bin)

    def predict_mask(self, x: torch.Tensor) -> torch.Tensor:
        """The mask of a window's frames less ``offset`` at each end."""
        return self.forward(x)[..., self.offset : -self.offset]
