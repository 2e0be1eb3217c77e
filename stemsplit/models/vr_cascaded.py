"""UVR's VR 5.1 network (``CascadedNet``): U-Nets with a bidirectional LSTM over frames.

Input (batch, 2, bins + 1, frames) magnitudes divided by the track's maximum; output a mask
of the same shape. Widths: ``nout`` and ``nout_lstm`` from UVR's model data (``nout`` is 64
whatever the data says for files of 218409 KiB, as UVR does).
"""

from __future__ import annotations

import torch
from torch import nn

from .vr_layers import ConvBNActivation, frequency_branch, replicate_bins, stretch, upsample_and_join

OFFSET = 64
WIDE_SIZE_KIB = 218409


class _Encoder(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = ConvBNActivation(nin, nout, 3, 2, 1, activation=nn.LeakyReLU)
        self.conv2 = ConvBNActivation(nout, nout, 3, 1, 1, activation=nn.LeakyReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _Decoder(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = ConvBNActivation(nin, nout, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv1(upsample_and_join(x, skip))


class _ASPP(nn.Module):
    def __init__(self, nin: int, nout: int, dilations=((4, 2), (8, 4), (12, 6))) -> None:
        super().__init__()
        self.conv1 = frequency_branch(ConvBNActivation(nin, nout, 1, 1, 0))
        self.conv2 = ConvBNActivation(nin, nout, 1, 1, 0)
        self.conv3, self.conv4, self.conv5 = (ConvBNActivation(nin, nout, 3, 1, d, d)
                                              for d in dilations)
        self.bottleneck = ConvBNActivation(nout * 5, nout, 1, 1, 0)
        self.dropout = nn.Dropout2d(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [stretch(self.conv1(x), x), self.conv2(x), self.conv3(x), self.conv4(x),
                    self.conv5(x)]
        return self.dropout(self.bottleneck(torch.cat(features, dim=1)))


class _FrameLSTM(nn.Module):
    """Channels squeezed to one plane of ``bins`` features per frame, a bidirectional LSTM
    over the frames, then back to ``bins`` features: (N, C, bins, T) -> (N, 1, bins, T)."""

    def __init__(self, nin_conv: int, bins: int, hidden: int) -> None:
        super().__init__()
        self.conv = ConvBNActivation(nin_conv, 1, 1, 1, 0)
        self.lstm = nn.LSTM(input_size=bins, hidden_size=hidden // 2, bidirectional=True)
        self.dense = nn.Sequential(nn.Linear(hidden, bins), nn.BatchNorm1d(bins), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, bins, frames = x.shape
        h = self.conv(x)[:, 0].permute(2, 0, 1)  # frames, batch, bins
        h, _ = self.lstm(h)
        h = self.dense(h.reshape(frames * batch, -1)).reshape(frames, batch, 1, bins)
        return h.permute(1, 2, 3, 0)


class _UNet(nn.Module):
    def __init__(self, nin: int, nout: int, lstm_bins: int, lstm_hidden: int) -> None:
        super().__init__()
        self.enc1 = ConvBNActivation(nin, nout, 3, 1, 1)
        self.enc2 = _Encoder(nout, nout * 2)
        self.enc3 = _Encoder(nout * 2, nout * 4)
        self.enc4 = _Encoder(nout * 4, nout * 6)
        self.enc5 = _Encoder(nout * 6, nout * 8)
        self.aspp = _ASPP(nout * 8, nout * 8)
        self.dec4 = _Decoder(nout * 14, nout * 6)
        self.dec3 = _Decoder(nout * 10, nout * 4)
        self.dec2 = _Decoder(nout * 6, nout * 2)
        self.lstm_dec2 = _FrameLSTM(nout * 2, lstm_bins, lstm_hidden)
        self.dec1 = _Decoder(nout * 3 + 1, nout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        h = self.aspp(self.enc5(e4))
        h = self.dec2(self.dec3(self.dec4(h, e4), e3), e2)
        return self.dec1(torch.cat([h, self.lstm_dec2(h)], dim=1), e1)


class LSTMCascade(nn.Module):
    offset = OFFSET

    def __init__(self, bins: int, nout: int = 32, nout_lstm: int = 128,
                 size_kib: int | None = None) -> None:
        super().__init__()
        nout = 64 if size_kib == WIDE_SIZE_KIB else nout
        self.max_bin = bins
        self.output_bin = bins + 1
        half_bins = bins // 4  # the LSTM's features: bins of one half, halved by enc1..2
        self.stg1_low_band_net = nn.Sequential(
            _UNet(2, nout // 2, half_bins, nout_lstm),
            ConvBNActivation(nout // 2, nout // 4, 1, 1, 0))
        self.stg1_high_band_net = _UNet(2, nout // 4, half_bins, nout_lstm // 2)
        self.stg2_low_band_net = nn.Sequential(
            _UNet(nout // 4 + 2, nout, half_bins, nout_lstm),
            ConvBNActivation(nout, nout // 2, 1, 1, 0))
        self.stg2_high_band_net = _UNet(nout // 4 + 2, nout // 2, half_bins, nout_lstm // 2)
        self.stg3_full_band_net = _UNet(3 * nout // 4 + 2, nout, bins // 2, nout_lstm)
        self.out = nn.Conv2d(nout, 2, 1, bias=False)
        self.aux_out = nn.Conv2d(3 * nout // 4, 2, 1, bias=False)  # training only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Magnitudes (batch, 2, bins + 1, frames) -> the mask, same shape."""
        x = x[:, :, : self.max_bin]
        half = x.shape[2] // 2
        low, high = x[:, :, :half], x[:, :, half:]
        low1, high1 = self.stg1_low_band_net(low), self.stg1_high_band_net(high)
        low2 = self.stg2_low_band_net(torch.cat([low, low1], dim=1))
        high2 = self.stg2_high_band_net(torch.cat([high, high1], dim=1))
        stage3_input = torch.cat([x, torch.cat([low1, high1], dim=2),
                                  torch.cat([low2, high2], dim=2)], dim=1)
        h = self.stg3_full_band_net(stage3_input)
        return replicate_bins(torch.sigmoid(self.out(h)), self.output_bin)

    def predict_mask(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[..., self.offset : -self.offset]
