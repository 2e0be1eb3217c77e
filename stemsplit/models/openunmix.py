"""Open-Unmix (sigsep's ``openunmix`` 1.3.0): one spectrogram network per target, and the
separator around them (STFT, multichannel Wiener filter, inverse STFT).

The network of one target (``UnmixNet``) maps a magnitude spectrogram to that target's
magnitudes. Its steps, with F the STFT bins and B the bins it reads (``max_bin``; 1487 of
2049 for the 44.1 kHz models, 16 kHz of bandwidth):

1. the bins below B, standardised per bin with the stored statistics (``input_mean`` holds
   the *negated* training mean and ``input_scale`` the *reciprocal* of its deviation: the
   input is ``(x + input_mean) * input_scale``);
2. all channels' bins of one frame -> ``hidden`` features (``fc1``, no bias), batch norm,
   tanh;
3. a (by default bidirectional) LSTM over the frames, whose output is concatenated with its
   input (2 * hidden);
4. ``fc2`` (no bias) back to ``hidden``, batch norm, ReLU; ``fc3`` (no bias) to every
   channel's F bins, batch norm;
5. an affine map per bin (``output_scale``, ``output_mean``), ReLU, times the input
   magnitudes: a non-negative mask on the whole spectrum.

A network with ``channels`` 1 on a stereo track (umxse) reads the mean of the channels'
magnitudes; its one estimate applies to both channels in the Wiener filter.

``UnmixSeparator`` is ``openunmix.model.Separator``'s processing for (batch, channels, time)
waveforms: centred STFT (periodic Hann, reflect padding), every target network, then per
track the Wiener filter of ``models.wiener`` over windows of ``wiener_frames`` frames
(``niter`` EM steps, optional residual target, optional soft mask), and the inverse STFT to
the input length. Output: (batch, stems, channels, time). The inverse STFT is done window
by window (each window's frames overlap-added into the waveforms, divided by the summed
squared window at the end: ``torch.istft``'s arithmetic), so the filtered spectrograms of
the whole track are never held: what grows with the track is the mixture's STFT, the
targets' magnitudes and the waveforms. The networks run in whatever precision the caller's
autocast gives them; the transforms and the filter always run in float32.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .wiener import wiener_filter

__all__ = ["UnmixNet", "UnmixSeparator", "state_dimensions"]

NETWORK_KEYS = ("fc1.weight", "bn1.weight", "fc2.weight", "bn2.weight", "fc3.weight",
                "bn3.weight", "input_mean", "input_scale", "output_scale", "output_mean")
"""Keys every target network's state dict has (plus ``lstm.*``)."""


class UnmixNet(nn.Module):
    """One target's network: magnitudes (batch, channels, bins, frames) -> the same shape."""

    def __init__(self, bins: int, channels: int = 2, hidden: int = 512, layers: int = 3,
                 max_bin: int | None = None, bidirectional: bool = True) -> None:
        super().__init__()
        self.bins = bins
        self.channels = channels
        self.hidden = hidden
        self.max_bin = max_bin or bins
        self.fc1 = nn.Linear(self.max_bin * channels, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.lstm = nn.LSTM(hidden, hidden // 2 if bidirectional else hidden, num_layers=layers,
                            bidirectional=bidirectional)
        self.fc2 = nn.Linear(2 * hidden, hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, bins * channels, bias=False)
        self.bn3 = nn.BatchNorm1d(bins * channels)
        self.input_mean = nn.Parameter(torch.zeros(self.max_bin))
        self.input_scale = nn.Parameter(torch.ones(self.max_bin))
        self.output_scale = nn.Parameter(torch.ones(bins))
        self.output_mean = nn.Parameter(torch.ones(bins))

    def forward(self, magnitudes: torch.Tensor) -> torch.Tensor:
        encoded = self.encode(magnitudes)
        return self.decode(encoded, self.recur(encoded), magnitudes)

    def encode(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: (batch, channels, bins, frames) -> (frames, batch, hidden)."""
        batch, channels, bins, frames = magnitudes.shape
        # frames first: the LSTM runs along dim 0; (frames, batch, channels, bins)
        mix = magnitudes.permute(3, 0, 1, 2)
        x = (mix[..., : self.max_bin] + self.input_mean) * self.input_scale
        x = torch.tanh(self.bn1(self.fc1(x.reshape(frames * batch, -1))))
        return x.reshape(frames, batch, self.hidden)

    def recur(self, encoded: torch.Tensor) -> torch.Tensor:
        """Step 3's LSTM over the frames: (frames, batch, hidden) -> the same."""
        return self.lstm(encoded)[0]

    def decode(self, encoded: torch.Tensor, recurrent: torch.Tensor,
               magnitudes: torch.Tensor) -> torch.Tensor:
        """Steps 3 (the concatenation) to 5: the target's magnitudes, shaped as the input."""
        batch, channels, bins, frames = magnitudes.shape
        x = torch.cat([encoded, recurrent], dim=-1).reshape(frames * batch, -1)
        x = F.relu(self.bn2(self.fc2(x)))
        x = self.bn3(self.fc3(x)).reshape(frames, batch, channels, bins)
        # in place: these full-spectrum temporaries are the network's largest (inference only)
        mask = x.mul_(self.output_scale).add_(self.output_mean).relu_()
        return mask.mul_(magnitudes.permute(3, 0, 1, 2)).permute(1, 2, 3, 0)


def _in_parallel(functions: Sequence, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``[f(x) for f, x in zip(functions, inputs)]``, on up to torch's thread count of Python
    threads at once. For the targets' LSTMs: an LSTM steps through the frames one small
    matrix product at a time, which one core does about as fast as several, so one LSTM
    per core is what uses them (same arithmetic, same results). Each thread runs with the
    caller's grad/inference mode and autocast (they are per thread in PyTorch)."""
    workers = min(len(functions), torch.get_num_threads())
    if workers < 2:
        return [function(x) for function, x in zip(functions, inputs)]
    from concurrent.futures import ThreadPoolExecutor

    inference = torch.is_inference_mode_enabled()
    grad = torch.is_grad_enabled()
    device = inputs[0].device.type
    autocast = torch.is_autocast_enabled(device)
    dtype = torch.get_autocast_dtype(device)

    def run(function, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad), \
                torch.autocast(device, dtype=dtype, enabled=autocast):
            return function(x)

    with ThreadPoolExecutor(workers, thread_name_prefix="stemsplit-lstm") as pool:
        return list(pool.map(run, functions, inputs))


def state_dimensions(state: dict) -> dict:
    """``UnmixNet``'s arguments, read from one target's state dict: bins, channels, hidden,
    layers, max_bin, bidirectional. KeyError for a key that is missing."""
    hidden, inputs = state["fc1.weight"].shape
    max_bin = state["input_mean"].shape[0]
    outputs = state["fc3.weight"].shape[0]
    bins = state["output_scale"].shape[0]
    layers = 0
    while f"lstm.weight_ih_l{layers}" in state:
        layers += 1
    return {"bins": bins, "channels": outputs // bins, "hidden": hidden, "layers": layers,
            "max_bin": max_bin, "bidirectional": "lstm.weight_ih_l0_reverse" in state,
            "input_channels": inputs // max_bin}


class UnmixSeparator(nn.Module):
    """Waveforms (batch, channels, time) -> stems (batch, stems, channels, time).

    ``targets``: one ``UnmixNet`` per stem, in output order; ``residual`` adds one more stem,
    the mixture minus the targets before the EM steps. ``wiener_frames`` None filters the
    whole track at once."""

    def __init__(self, targets: Sequence[UnmixNet], n_fft: int, hop: int, niter: int = 1,
                 softmask: bool = False, residual: bool = False,
                 wiener_frames: int | None = 300) -> None:
        super().__init__()
        if niter > 0 and len(targets) + residual < 2:
            raise ValueError("the Wiener filter's EM steps need two targets or more (add the "
                             "residual, or set niter to 0)")
        self.targets = nn.ModuleList(targets)
        self.n_fft = n_fft
        self.hop = hop
        self.niter = niter
        self.softmask = softmask
        self.residual = residual
        self.wiener_frames = wiener_frames
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def stem_count(self) -> int:
        return len(self.targets) + self.residual

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        batch, channels, length = audio.shape
        shortest = self.n_fft // 2 + 1  # the STFT's reflect padding needs this much
        if length < shortest:  # (openunmix fails here): zeros after it, cut off again
            padded = F.pad(audio, (0, shortest - length))
            return self.forward(padded)[..., :length]
        with torch.autocast(audio.device.type, enabled=False):
            spec = torch.stft(audio.float().reshape(batch * channels, length), self.n_fft,
                              self.hop, window=self.window, center=True, pad_mode="reflect",
                              return_complex=True)
            spec = spec.reshape(batch, channels, *spec.shape[-2:])  # (B, C, F, T)
            magnitudes = spec.abs()
            if self.targets[0].channels == 1 and channels > 1:
                magnitudes = magnitudes.mean(dim=1, keepdim=True)
        # (B, C', F, T, targets): each network's estimate, in float32 whatever autocast gives
        estimates = magnitudes.new_empty(*magnitudes.shape, len(self.targets))
        encoded = [target.encode(magnitudes) for target in self.targets]
        recurrent = _in_parallel([target.recur for target in self.targets], encoded)
        for index, target in enumerate(self.targets):
            estimates[..., index] = target.decode(encoded[index], recurrent[index], magnitudes)
            encoded[index] = recurrent[index] = None
        del magnitudes
        with torch.autocast(audio.device.type, enabled=False):
            return self._filter_and_invert(estimates, spec, length)

    def _filter_and_invert(self, estimates: torch.Tensor, spec: torch.Tensor,
                           length: int) -> torch.Tensor:
        """The Wiener filter window by window, each window's frames inverted and
        overlap-added at once: ``torch.istft(center=True, length=length)``'s sum, divided by
        the summed squared window at the end. No stem's whole spectrogram is ever held.
        (B, C', F, T, targets), (B, C, F, T) -> (B, S, C, length)."""
        batch, channels, _, frames = spec.shape
        half = self.n_fft // 2
        span_length = (frames - 1) * self.hop + self.n_fft
        out = spec.real.new_zeros(batch, self.stem_count, channels, span_length)
        envelope = spec.real.new_zeros(span_length)
        squared = self.window.square()
        step = self.wiener_frames or frames
        for start in range(0, frames, step):
            span = slice(start, min(frames, start + step))
            first = start * self.hop
            added = self._overlap_add(squared.expand(1, 1, span.stop - start, -1))
            envelope[first: first + added.shape[-1]] += added[0, 0]
            for b in range(batch):
                # (t, F, C', S) magnitudes and (t, F, C) mixture -> (t, F, C, S') stems
                filtered = wiener_filter(estimates[b, :, :, span].permute(2, 1, 0, 3),
                                         spec[b, :, :, span].permute(2, 1, 0), self.niter,
                                         residual=self.residual, softmask=self.softmask)
                for stem in range(filtered.shape[-1]):  # one stem at a time: smaller buffers
                    pieces = torch.fft.irfft(filtered[..., stem].permute(2, 0, 1), n=self.n_fft)
                    out[b, stem, :, first: first + added.shape[-1]] += self._overlap_add(
                        pieces.mul_(self.window)[None])[0]
                del filtered
        end = min(span_length, half + length)
        waves = out[..., half:end] / envelope[half:end]
        if waves.shape[-1] < length:
            waves = F.pad(waves, (0, length - waves.shape[-1]))
        return waves

    def _overlap_add(self, pieces: torch.Tensor) -> torch.Tensor:
        """(S, C, t, n_fft) windowed frames -> (S, C, (t - 1) * hop + n_fft), frame k added
        at k * hop. With n_fft a whole number r of hops (openunmix's 4): r strided adds of
        (t, hop) blocks, in the order ``fold`` sums them; else ``fold``."""
        stems, channels, count, n_fft = pieces.shape
        hop = self.hop
        if n_fft % hop:
            folded = F.fold(pieces.reshape(stems * channels, count, n_fft).transpose(1, 2),
                            output_size=(1, (count - 1) * hop + n_fft),
                            kernel_size=(1, n_fft), stride=(1, hop))
            return folded.reshape(stems, channels, -1)
        ratio = n_fft // hop
        blocks = pieces.reshape(stems, channels, count, ratio, hop)
        out = pieces.new_zeros(stems, channels, count + ratio - 1, hop)
        for part in range(ratio):
            out[:, :, part : part + count] += blocks[:, :, :, part]
        return out.reshape(stems, channels, -1)
