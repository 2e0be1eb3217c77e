"""Mel-Band RoFormer (Wang et al. 2023), as ZFTurbo's
``models/bs_roformer/mel_band_roformer.py``.

Same constructor keywords (those that matter at inference), same state_dict keys. Differences
from the Band-Split RoFormer: ``num_bands`` overlapping bands from a Slaney mel filterbank
(a bin belongs to every band whose filter is > 0, with bins 0 and the last forced into the
first and last band); the masks of overlapping bands are averaged; every transformer ends in
an RMSNorm and there is no final norm; mask MLPs have ``mask_estimator_depth`` hidden
layers; the output has the iSTFT's natural length ((frames - 1) * hop) unless
``match_input_audio_length``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .mel import slaney_mel_filterbank
from .roformer import RoformerBase, apply_masks, band_split_input, run_layers


class MelBandRoformer(RoformerBase):
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
        num_bands: int = 60,
        dim_head: int = 64,
        heads: int = 8,
        sample_rate: int = 44100,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        zero_dc: bool = True,
        mask_estimator_depth: int = 1,
        match_input_audio_length: bool = False,
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
            skip_connection=skip_connection, use_pope=use_pope, norm_output=True,
        )
        self.match_input_audio_length = match_input_audio_length
        n_freqs = self.codec.num_freqs

        filterbank = torch.from_numpy(slaney_mel_filterbank(sample_rate, stft_n_fft, num_bands))
        filterbank[0, 0] = 1.0  # as ZFTurbo: the DC bin in the first band,
        filterbank[-1, -1] = 1.0  # the Nyquist bin in the last (whatever rounding gave)
        freqs_per_band = filterbank > 0
        if not bool(freqs_per_band.any(dim=0).all()):
            raise ValueError(
                f"{num_bands} mel bands leave some of the {n_freqs} frequencies of "
                f"stft_n_fft={stft_n_fft} uncovered"
            )
        freq_indices = torch.arange(n_freqs).expand(num_bands, n_freqs)[freqs_per_band]
        if stereo:  # index (freq, channel) pairs of the interleaved (f s) axis
            freq_indices = (freq_indices[:, None] * 2 + torch.arange(2)).reshape(-1)
        num_freqs_per_band = freqs_per_band.sum(dim=1)
        num_bands_per_freq = freqs_per_band.sum(dim=0)
        self.register_buffer("freq_indices", freq_indices, persistent=False)
        self.register_buffer("freqs_per_band", freqs_per_band, persistent=False)
        self.register_buffer("num_freqs_per_band", num_freqs_per_band, persistent=False)
        self.register_buffer("num_bands_per_freq", num_bands_per_freq, persistent=False)
        # Divisor of the summed masks per (freq, channel), as ZFTurbo (float32 after clamp).
        self.register_buffer(
            "_mask_divisor",
            num_bands_per_freq.repeat_interleave(self.audio_channels)
            .clamp(min=1e-8)
            .to(torch.float32),
            persistent=False,
        )

        dim_inputs = tuple(2 * int(f) * self.audio_channels for f in num_freqs_per_band.tolist())
        self.build_bands(dim, dim_inputs, mask_estimator_depth, mlp_expansion_factor)

    @torch.no_grad()
    def forward(self, mix: Tensor) -> Tensor:
        """(batch, channels, time) -> (batch, stems, channels, time_out); time_out is
        (time // hop) * hop, or time with match_input_audio_length."""
        spec, batch, channels, length = self.spectrum(mix)
        n_freqs, n_frames = spec.shape[-2:]

        x = band_split_input(spec, batch, channels).index_select(2, self.freq_indices)
        x = self.band_split(x.view(batch, n_frames, -1))
        x = run_layers(self.layers, x, self.skip_connection)

        n_selected = self.freq_indices.shape[0]
        masks = self.estimate_masks(x, n_selected * 2)
        # Average the masks of the bands that share a frequency.
        summed = masks.new_zeros((self.num_stems, batch * n_frames, n_freqs * channels, 2))
        summed.index_add_(
            2, self.freq_indices, masks.view(self.num_stems, batch * n_frames, n_selected, 2)
        )
        summed.div_(self._mask_divisor.view(-1, 1))

        masked = apply_masks(
            spec, summed.view(self.num_stems, batch * n_frames, -1), batch, channels, self.zero_dc
        )
        audio = self.codec.istft(masked, length=length if self.match_input_audio_length else None)
        return audio.view(batch, self.num_stems, channels, audio.shape[-1])
