"""A VR separator as the engine runs it: chunk by chunk in bounded memory, exactly UVR's
whole-track stems (``models/vr_stream``), or the whole track at once where that cannot be.

A chunk is ``plan.chunk`` spectrogram frames (a multiple of the frame grid's alignment):
``chunk x H`` samples of output (H: 44.1 kHz samples per frame), read with ``context x H``
samples either side. The network's input is divided by the whole track's maximum magnitude,
which the engine's pre-pass takes over the same chunks (``Prepass``: each chunk's maximum,
folded with ``max``). Where a chunk sits in the track (its first frame, the track's end)
comes with each call (``ChunkPlace``); a pass's ``ChunkedTrack`` lives in the place's state,
so the mask of one chunk's last windows is reused by the next.

UVR's post-processing and the "reverse" channel layout need the whole track: then the
engine hands over the whole track as one chunk (memory grows with the track).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import torch

from ...engine import ChunkPlace, Chunking, Network, Prepass, Window
from ...models.vr_stream import ChunkedTrack, ChunkPlan, streamable
from .network import VRSeparator

WHOLE_TRACK = 1 << 62
"""A chunk longer than any track."""


def engine_network(separator: VRSeparator, batch_size: int,
                   chunk_frames: int | None = None) -> Network:
    """The engine's network for ``separator``, its windows batched ``batch_size`` at a time
    (UVR's batch size); chunks of about ``chunk_frames`` frames (default: 8 window steps)."""
    separator = separator.with_settings(replace(separator.settings, batch_size=batch_size))
    if not streamable(separator.config, separator.settings):
        chunking = Chunking(length=WHOLE_TRACK, stride=WHOLE_TRACK,
                            window=Window("rectangular"), fill="none", normalise=None)
        return Network(forward=separator, chunking=chunking, stem_weights=(1.0, 1.0))
    chunks = ChunkedForward(separator, chunk_frames)
    return Network(forward=chunks, chunking=chunks.chunking(), stem_weights=(1.0, 1.0),
                   prepass=Prepass(measure=chunks.maximum, combine=max))


class ChunkedForward:
    """Positioned forward (and pre-pass measure) over whole chunks of frames."""

    def __init__(self, separator: VRSeparator, chunk_frames: int | None = None) -> None:
        self.separator = separator
        self.plan = ChunkPlan.of(separator.config, separator.settings, separator.network.offset,
                                 chunk_frames)
        self.hop: Fraction = self.plan.hop
        self.length = int(self.plan.chunk * self.hop)
        self.context = int(self.plan.context * self.hop)

    def chunking(self) -> Chunking:
        context = self.context
        return Chunking(length=self.length, stride=self.length, window=Window("rectangular"),
                        fill="none", input_length=lambda frames: frames + 2 * context,
                        normalise=None, positioned=True, chunks_per_call=1)

    def _track(self, place: ChunkPlace, key: str) -> ChunkedTrack:
        track = place.state.get(key)
        if track is None:
            separator = self.separator
            track = ChunkedTrack(place.total_frames, separator.config, separator.v51,
                                 separator.settings, separator.mask_network,
                                 separator.network.offset, separator.facts.primary_stem,
                                 device=separator.device, chunk_frames=self.plan.chunk)
            track.scale = place.measured
            place.state[key] = track
        return track

    def _frame(self, read_start: int) -> int:
        """The first frame of the chunk whose input starts at ``read_start``."""
        frame = Fraction(read_start + self.context) / self.hop
        if frame.denominator != 1 or frame % self.plan.chunk:
            raise ValueError(f"VR: a chunk read from sample {read_start} is off the frame grid")
        return int(frame)

    def _items(self, inputs: torch.Tensor, place: ChunkPlace):
        """Per input: its chunk's first frame and a reader of the mixture around it."""
        for item, read_start in zip(inputs, place.read_starts):
            wave = item.detach().float().cpu().numpy()
            if wave.shape[0] == 1:
                wave = np.concatenate([wave, wave])
            yield self._frame(read_start), _reader(wave, read_start)

    def maximum(self, inputs: torch.Tensor, place: ChunkPlace) -> float:
        track = self._track(place, "measure")
        return max((track.maximum_of(read, frame) if frame < track.layout.frames else 0.0)
                   for frame, read in self._items(inputs, place))

    def __call__(self, inputs: torch.Tensor, place: ChunkPlace) -> torch.Tensor:
        track = self._track(place, "separate")
        stems = torch.zeros(inputs.shape[0], 2, 2, inputs.shape[-1])
        out = stems.numpy()
        for index, (frame, read) in enumerate(self._items(inputs, place)):
            if frame >= track.layout.frames:
                continue  # past the stems' end: zeros
            primary, secondary = track.stems_of(read, frame)
            usable = min(primary.shape[-1], inputs.shape[-1] - self.context)
            out[index, 0, :, self.context : self.context + usable] = primary[:, :usable]
            out[index, 1, :, self.context : self.context + usable] = secondary[:, :usable]
        return stems.to(inputs.device)


def _reader(wave: np.ndarray, read_start: int):
    """read(start, stop) over ``wave``, which holds track samples from ``read_start`` (the
    engine's zeros past the track's ends included); zeros outside it."""
    def read(start: int, stop: int) -> np.ndarray:
        piece = np.zeros((2, stop - start), dtype=np.float32)
        low = max(start, read_start)
        high = min(stop, read_start + wave.shape[-1])
        if high > low:
            piece[:, low - start : high - start] = wave[:, low - read_start : high - read_start]
        return piece
    return read
