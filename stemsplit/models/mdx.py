"""MDX-Net (KUIELab, MDX 2021; the UVR community's ONNX models): the framing around a network.

The published networks map a spectrogram to a spectrogram; everything else is fixed maths,
written here after UVR's ``separate.py`` (``SeperateMDX``):

* a chunk is ``hop * (dim_t - 1)`` samples; its centred STFT (periodic Hann window of
  ``n_fft`` samples, reflection padding, ``hop`` 1024) has exactly ``dim_t`` frames;
* the network input is (batch, 4, dim_f, dim_t): left real, left imaginary, right real,
  right imaginary, frequency bins [0, dim_f) with bins 0, 1 and 2 set to zero;
* the network output (same shape) is zero-filled above ``dim_f`` and inverted (iSTFT, same
  window) back to the chunk's samples; with ``denoise`` it is
  ``0.5 * net(x) - 0.5 * net(-x)``: what follows the input's sign is kept, what the network
  adds whatever the sign (its noise floor) cancels;
* the primary stem is that output times ``compensate`` (a per-model gain); the secondary
  stem is the mixture minus the primary, so the two stems sum to the mixture.

How chunks are laid on the track (n_fft/2 zeros in front, ``MDXParameters.padding`` behind,
stride ``int((1 - overlap) * chunk)``, overlap-add weighted by a symmetric Hann window of each
chunk's real length) is the engine's job (``stemsplit/families/mdx.py`` describes it as an
``engine.Chunking``). Model code never touches files: the network itself comes in as a
callable (see ``stemsplit/families/mdx/onnx_runner.py`` for the onnxruntime one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ModelError

SpectrumNetwork = Callable[[torch.Tensor], torch.Tensor]
"""(batch, 4, dim_f, dim_t) float32 -> the same shape."""

CHANNELS = 2
"""MDX-Net networks are stereo: 4 input planes = 2 channels x (real, imaginary)."""

ZEROED_BINS = 3
"""The lowest frequency bins, set to zero in the network input (as UVR does)."""

HOP = 1024
"""The hop every published MDX-Net model uses (UVR hard-codes it)."""


@dataclass(frozen=True)
class MDXParameters:
    """What an MDX-Net model needs beyond its network: UVR's model data."""

    n_fft: int
    dim_f: int
    dim_t: int
    compensate: float
    hop: int = HOP

    def __post_init__(self) -> None:
        if self.n_fft < 2 or self.hop < 1 or self.dim_t < 2 or self.dim_f < 1:
            raise ModelError(f"MDX-Net: invalid parameters {self}")
        if self.dim_f > self.n_fft // 2 + 1:
            raise ModelError(
                f"MDX-Net: dim_f {self.dim_f} exceeds the {self.n_fft // 2 + 1} frequency bins "
                f"of n_fft {self.n_fft}", hint="check --n-fft")
        if self.generated <= 0:
            raise ModelError(
                f"MDX-Net: a chunk of {self.chunk} samples (hop {self.hop} x (dim_t {self.dim_t} "
                f"- 1)) is not longer than n_fft {self.n_fft}", hint="check --n-fft")
        if not self.compensate > 0:
            raise ModelError(f"MDX-Net: compensate must be positive, not {self.compensate}")

    @property
    def trim(self) -> int:
        """Samples at each end of a chunk that the STFT cannot see whole: n_fft / 2."""
        return self.n_fft // 2

    @property
    def chunk(self) -> int:
        """Samples per network call; its centred STFT has exactly dim_t frames."""
        return self.hop * (self.dim_t - 1)

    @property
    def generated(self) -> int:
        """UVR's ``gen_size``: a chunk less the trims at both ends."""
        return self.chunk - 2 * self.trim

    def padding(self, frames: int) -> tuple[int, int]:
        """UVR's zeros around a track of ``frames`` samples: trim in front, and behind
        enough to end one ``generated`` past a multiple of it, plus trim."""
        return self.trim, self.generated + self.trim - frames % self.generated


class MDXNet(torch.nn.Module):
    """A spectrogram network as a waveform separator: (batch, 2, n) -> (batch, 2, 2, n).

    Stem 0 is the primary (network output times ``compensate``), stem 1 the secondary
    (mixture minus primary). Chunks shorter than ``model_data.chunk`` (at the end of a track)
    are padded with zeros behind, as UVR pads its last chunks.
    """

    def __init__(self, network: SpectrumNetwork, model_data: MDXParameters,
                 sources: tuple[str, str], sample_rate: int = 44100,
                 denoise: bool = False) -> None:
        super().__init__()
        self.network = network
        self.model_data = model_data
        self.sources = tuple(sources)
        self.samplerate = sample_rate
        self.audio_channels = CHANNELS
        self.denoise = denoise
        self.register_buffer(
            "stft_window", torch.hann_window(model_data.n_fft, periodic=True), persistent=False)

    @property
    def segment(self) -> float:
        """Seconds per chunk (fixed by the network's input shape)."""
        return self.model_data.chunk / self.samplerate

    # -- spectrogram framing -------------------------------------------------------------
    def spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """(batch, 2, chunk) -> (batch, 4, dim_f, dim_t): L.re, L.im, R.re, R.im."""
        p = self.model_data
        batch, channels, length = wave.shape
        spec = torch.stft(wave.reshape(batch * channels, length), n_fft=p.n_fft, hop_length=p.hop,
                          window=self.stft_window, center=True, return_complex=True)
        spec = torch.view_as_real(spec[:, : p.dim_f])  # (B*C, dim_f, T, 2)
        spec = spec.permute(0, 3, 1, 2).reshape(batch, channels * 2, p.dim_f, -1)
        spec[:, :, :ZEROED_BINS] = 0
        return spec

    def waveform(self, spec: torch.Tensor) -> torch.Tensor:
        """(batch, 4, dim_f, dim_t) -> (batch, 2, chunk), bins >= dim_f taken as zero."""
        p = self.model_data
        batch, planes, bins, frames = spec.shape
        spec = torch.nn.functional.pad(spec, (0, 0, 0, p.n_fft // 2 + 1 - bins))
        spec = spec.reshape(batch * planes // 2, 2, -1, frames).permute(0, 2, 3, 1)
        wave = torch.istft(torch.view_as_complex(spec.contiguous()), n_fft=p.n_fft,
                           hop_length=p.hop, window=self.stft_window, center=True)
        return wave.reshape(batch, planes // 2, -1)

    def run_network(self, spec: torch.Tensor) -> torch.Tensor:
        p = self.model_data
        if self.denoise:
            out = 0.5 * self.network(spec) - 0.5 * self.network(-spec)
        else:
            out = self.network(spec)
        expected = (spec.shape[0], 2 * CHANNELS, p.dim_f, p.dim_t)
        if tuple(out.shape) != expected:
            raise ModelError(f"MDX-Net: the network returned shape {list(out.shape)}, "
                             f"expected {list(expected)}")
        return out

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        p = self.model_data
        length = mix.shape[-1]
        if length > p.chunk:
            raise ValueError(f"chunk of {length} samples exceeds the network's {p.chunk}")
        wave = torch.nn.functional.pad(mix, (0, p.chunk - length))
        estimate = self.waveform(self.run_network(self.spectrum(wave)))[..., :length]
        primary = estimate * p.compensate
        return torch.stack([primary, mix - primary], dim=1)
