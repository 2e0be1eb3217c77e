"""Band-Split RoFormer (Lu et al. 2023), as ZFTurbo's ``models/bs_roformer/bs_roformer.py``.

Same constructor keywords (those that matter at inference), same state_dict keys. Differences
from the Mel-Band RoFormer: contiguous bands of ``freqs_per_bands`` bins; transformers without
an output norm and one ``final_norm`` after the stack; mask MLPs with
``mask_estimator_depth - 1`` hidden layers; the output is cut to the input's length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .roformer import RMSNorm, RoformerBase, apply_masks, band_split_input, run_layers

DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


class BSRoformer(RoformerBase):
    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        stereo: bool = False,
        num_stems: int = 1,
        time_transformer_depth: int = 2,
        freq_transformer_depth: int = 2,
        linear_transformer_depth: int = 0,
        freqs_per_bands: Sequence[int] = DEFAULT_FREQS_PER_BANDS,
        dim_head: int = 64,
        heads: int = 8,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        zero_dc: bool = True,
        mask_estimator_depth: int = 2,
        mlp_expansion_factor: int = 4,
        skip_connection: bool = False,
        use_pope: bool = False,
    ) -> None:
        super().__init__(
            dim=dim, depth=depth, stereo=stereo, num_stems=num_stems,
            time_transformer_depth=time_transformer_depth,
            freq_transformer_depth=freq_transformer_depth,
            linear_transformer_depth=linear_transformer_depth, dim_head=dim_head, heads=heads,
            stft_n_fft=stft_n_fft, stft_hop_length=stft_hop_length,
            stft_win_length=stft_win_length, stft_normalized=stft_normalized, zero_dc=zero_dc,
            skip_connection=skip_connection, use_pope=use_pope, norm_output=False,
        )
        self.final_norm = RMSNorm(dim)
        freqs_per_bands = tuple(int(f) for f in freqs_per_bands)
        if len(freqs_per_bands) < 2:
            raise ValueError("freqs_per_bands needs at least two bands")
        if sum(freqs_per_bands) != self.codec.num_freqs:
            raise ValueError(
                f"the bands of freqs_per_bands cover {sum(freqs_per_bands)} frequencies; "
                f"stft_n_fft={stft_n_fft} gives {self.codec.num_freqs}"
            )
        self.freqs_per_bands = freqs_per_bands
        dim_inputs = tuple(2 * f * self.audio_channels for f in freqs_per_bands)
        self.build_bands(dim, dim_inputs, mask_estimator_depth - 1, mlp_expansion_factor)

    @torch.no_grad()
    def forward(self, mix: Tensor) -> Tensor:
        """(batch, channels, time) -> (batch, stems, channels, time)."""
        spec, batch, channels, length = self.spectrum(mix)
        n_frames = spec.shape[-1]

        x = band_split_input(spec, batch, channels).view(batch, n_frames, -1)
        x = self.band_split(x)
        x = run_layers(self.layers, x, self.skip_connection)
        x2 = x.view(-1, x.shape[-1])
        self.final_norm(x2, out=x2)

        masks = self.estimate_masks(x, sum(self.band_split.dim_inputs))
        masked = apply_masks(spec, masks, batch, channels, self.zero_dc)
        audio = self.codec.istft(masked, length=length)
        return audio.view(batch, self.num_stems, channels, audio.shape[-1])
